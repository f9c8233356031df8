"""The built-in ``zoo compare`` tasks, registered through the hook every plugin uses.

``recall``, ``global``, ``aligned`` and ``memory`` (:mod:`.synthetic`) and
``retrieval`` (:mod:`.retrieval`). See the guide *Comparing what variants learn*.
"""

from __future__ import annotations

import zoo


@zoo.hookimpl
def zoo_register_tasks(register):
    from attention_zoo_plugins.tasks.retrieval import Retrieval
    from attention_zoo_plugins.tasks.synthetic import Aligned, Global, Memory, Recall

    for task in (Recall(), Global(), Aligned(), Memory(), Retrieval()):
        register(task)
