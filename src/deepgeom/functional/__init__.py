"""The functional core: pure maths on (N, D) arrays, numpy or torch in, numbers and dataclasses out.

``matrix`` (blocked Gram/covariance) and ``neighbors`` (exact k-NN) are the two hot paths every
estimator shares; ``intrinsic_dim``, ``cka``, ``spectrum`` and ``collapse`` are built on them.
"""
