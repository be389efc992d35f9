"""A user analysis for studies, loaded with ``analyses_from: my_analyses.py`` in the config.

An analysis is a function ``f(ctx) -> DataFrame`` registered under a name with the parameters it takes
(and their defaults). ``ctx.run`` is one trained run: ``ctx.run.model(epoch)`` rebuilds the network at
a checkpoint (None: the last), ``ctx.run.dataset`` is its data, ``ctx.params`` the resolved parameters.
The runner adds the run's sweep coordinates (model, width, depth, seed, ...) to every row and writes
``tables/weight_norms.csv`` and ``.parquet``.
"""

import pandas as pd

from deepgeom.studies import register_analysis


@register_analysis("weight_norms", defaults={"epoch": None})
def weight_norms(ctx) -> pd.DataFrame:
    """Frobenius norm of every parameter tensor of the trained network."""
    model = ctx.run.model(ctx.params["epoch"])
    return pd.DataFrame([{"param": name, "norm": float(p.detach().norm())} for name, p in model.named_parameters()])
