"""A plugin whose import fails, as a stranger's package might."""

raise RuntimeError("this plugin is broken on purpose")
