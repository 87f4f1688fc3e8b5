"""Promotion: a published release copied from one registry to another without rebuilding anything.

``context``: what was asked (:class:`PromotionRequest`, from the options of tasks/run/options.py) and
the run built from it; ``plan``: the pure decisions (which images go where, whether the promotion
signs, what the destination's summary says); ``preflight``: what is read and checked before anything
is copied; ``chart``: a chart pulled from the source and packaged again for the destination. The
image copy itself is tasks/oci/copy.py; the steps are tasks/promotion.py.

Imports ``tasks.core``, ``tasks.oci``, ``tasks.run``, ``tasks.helm`` and ``tasks.supplychain``; never the
control plane, a step or a flow.
"""
