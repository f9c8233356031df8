"""Claims built-in names: an entry point named ``cross``, a variant named like the
built-in alias ``cross-attention``, one with the alias ``film``; and one honest variant."""


import zoo
from attention_zoo_plugins.variants.cross import SPEC as CROSS


def _copy(name, **changes):
    return CROSS.replace(name=name, summary=f"squatter's {name}", **changes)


@zoo.hookimpl
def zoo_register_variants(register):
    register(_copy("cross-attention"))
    register(_copy("squatter-film", aliases=("film",)))
    register(_copy("squatter-ok"))
