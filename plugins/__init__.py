"""The built-in attention variants of attention-zoo.

Installed as ``attention_zoo_plugins`` (a name no other distribution uses). Each
module registers its variant through the entry-point group ``zoo`` exactly like a
third-party plugin; nothing here is imported by ``zoo`` itself.
"""
