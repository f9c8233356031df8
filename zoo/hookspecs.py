"""The hooks a zoo plugin can implement.

A plugin is any module or object registered under the entry-point group ``zoo``
whose functions are marked with :data:`zoo.hookimpl`. The built-in variants are
plugins of exactly this kind (see ``plugins/`` in the repository).

Example, a complete plugin module ``my_attention.py`` (a variant declared once: no hook
needed, the loader registers what the module declares)::

    import zoo

    @zoo.variant("my-attention", config=MyAttentionConfig, summary="...")
    class MyAttention(zoo.nn.MultiHeadBase): ...

or, the older way, with the hook::

    @zoo.hookimpl
    def zoo_register_variants(register):
        register(zoo.VariantSpec(name="my-attention", module=MyAttention,
                                 config=MyAttentionConfig, summary="..."))

and in its ``pyproject.toml``::

    [project.entry-points.zoo]
    my-attention = "my_attention"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import argparse

    from zoo.compare.task import Task
    from zoo.registry import VariantSpec
    from zoo.swapping import Adapter

hookspec = pluggy.HookspecMarker("zoo")
hookimpl = pluggy.HookimplMarker("zoo")


@hookspec
def zoo_register_variants(register: Callable[[VariantSpec], None]) -> None:
    """Register attention variants.

    Called once per process, the first time the registry is consulted
    (``zoo.list_variants``, ``zoo.get_variant``, ``zoo.create``, the CLI, ...),
    for every plugin that the entry-point group ``zoo`` names and that the
    ``ZOO_LOAD_PLUGINS`` environment variable allows.

    Args:
        register: call ``register(spec)`` once per :class:`zoo.VariantSpec` the
            plugin provides. The zoo records which plugin and distribution
            registered the name; a name (or alias) that is already taken is
            refused with a :class:`zoo.RegistrationError` naming both sources,
            and an invalid spec is refused likewise. A refused spec is reported
            by ``zoo plugins`` and does not stop the plugin's other specs or
            other plugins.

    Returns:
        Nothing; the return value is ignored.

    Examples:

        @zoo.hookimpl
        def zoo_register_variants(register):
            register(zoo.VariantSpec(name="cross", module=CrossAttention,
                                     config=CrossConfig, summary="Multi-head cross-attention"))
    """


@hookspec
def zoo_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add sub-commands to the ``zoo`` command line.

    Called once when ``zoo`` builds its argument parser, for every loaded plugin, in
    load order; the zoo's own ``check``, ``bench`` and ``compare`` come first, added
    through this same hook (:mod:`zoo.commands`). The convention: a command is a module
    (or object) with ``add_arguments(parser)`` and ``run(args) -> int``, added with
    :func:`zoo.commands.add_command` (which calls ``subparsers.add_parser(name,
    help=...)``, then ``add_arguments``, and sets ``func=run`` through
    ``set_defaults``); ``func(args)`` is called with the parsed arguments and its
    integer return value is the exit status. A plugin whose hook raises is reported
    and the command line keeps working. Like every zoo hook, an implementation marked
    ``tryfirst``/``trylast`` is refused: plugins are called in load order.

    Args:
        subparsers: the object returned by ``argparse.ArgumentParser.add_subparsers``.

    Returns:
        Nothing; the return value is ignored.

    Examples:

        from zoo.commands import add_command
        from my_plugin import my_command  # a module with add_arguments(parser) and run(args)

        @zoo.hookimpl
        def zoo_register_commands(subparsers):
            add_command(subparsers, "mine", "what my command does", my_command)
    """


@hookspec
def zoo_register_adapters(register: Callable[[Adapter], None]) -> None:
    """Register adapters that let :func:`zoo.swap` replace another library's attention modules.

    Called once per process, the first time :func:`zoo.swap` runs, for every loaded
    plugin (the built-in adapters for diffusers and transformers register through this
    hook like any third party's). Adapters are consulted in registration order; the
    first whose ``match`` returns a target for a module wins. An adapter must import
    its library only inside ``match``, once it sees one of that library's modules.

    Args:
        register: call ``register(adapter)`` once per :class:`zoo.SwapAdapter` (an
            object with a ``name`` and ``match(path, module) -> SwapTarget | None``).
            An adapter whose name is already registered, or an object that is no
            adapter, raises :class:`zoo.RegistrationError`.

    Returns:
        Nothing; the return value is ignored.

    Examples:

        class MyLibAdapter(zoo.SwapAdapter):
            name = "mylib"

            def match(self, path, module):
                if type(module).__name__ != "MyLibCrossAttention":
                    return None
                return zoo.SwapTarget(kind="cross", query_dim=module.dim,
                                      context_dim=module.cond_dim, heads=module.heads,
                                      dim_head=module.dim // module.heads,
                                      weights={"to_q.weight": module.wq.weight},
                                      wrap=MyLibWrapper)

        @zoo.hookimpl
        def zoo_register_adapters(register):
            register(MyLibAdapter())
    """


@hookspec
def zoo_register_tasks(register: Callable[[Task], None]) -> None:
    """Register tasks for ``zoo compare`` (what a variant can learn from its context).

    Called once per registry, the first time ``zoo compare`` (or
    :func:`zoo.compare.list_tasks`, :func:`zoo.compare.get_task`) needs the task list,
    for every loaded plugin that implements it. The built-in tasks (``recall``,
    ``global``, ``aligned``, ``memory``, ``retrieval``) are registered this way too.

    Args:
        register: call ``register(task)`` once per :class:`zoo.compare.Task` instance
            the plugin provides. A name already taken, or an object that is not a
            usable task, is refused with a ``ValueError`` naming the problem; ``zoo
            compare`` reports refused tasks and keeps the others.

    Returns:
        Nothing; the return value is ignored.

    Examples:

        @zoo.hookimpl
        def zoo_register_tasks(register):
            from my_tasks import Copy          # a zoo.compare.Task subclass
            register(Copy())
    """


HOOKS: dict[str, Any] = {
    "zoo_register_variants": zoo_register_variants,
    "zoo_register_commands": zoo_register_commands,
    "zoo_register_adapters": zoo_register_adapters,
    "zoo_register_tasks": zoo_register_tasks,
}
