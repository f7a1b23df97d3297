"""``kubectl dbquota``: the kubectl plugin FinOps and on-call use to read dbquota's verdicts.

``explain`` dry-runs claims through the real webhook and prints how each quota decided;
``top`` ranks quotas by budget used; ``status`` shows one quota's reservations, escrow,
conditions and Events. The modules, top to bottom:

- :mod:`~dbquota.plugin.main`: flags, commands, exit codes (the ``kubectl-dbquota``
  console script);
- :mod:`~dbquota.plugin.fetching`: the API calls, through
  :mod:`dbquota.adapters.kubeconfig` (kubectl's kubeconfig, server-side dry runs);
- :mod:`~dbquota.plugin.manifests`: the claims ``explain -f`` reads;
- :mod:`~dbquota.plugin.explanations` and :mod:`~dbquota.plugin.reports`: what the
  answers mean, as tables and as ``-o json|yaml`` documents;
- :mod:`~dbquota.plugin.tables`: kubectl-style tables and cells.

It sits beside :mod:`dbquota.cli` at the top of the layers (see ``pyproject.toml``).
"""
