"""The built-in variants that fit in one file each (RETRO, with its retrieval database,
is the package ``attention_zoo_plugins.retro``). Each module is one plugin of its own,
named by an entry point of the group ``zoo``; none imports another."""
