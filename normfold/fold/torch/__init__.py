"""The torch.fx front end: trace an nn.Module, find norm sites, fold them with the shared algebra.

``trace``: torch.fx with norms as leaves; ``probe``: every map checked against
its module's forward; ``split``: composites (norm + activation) split into
parts; ``between``: what may lie between a layer and a norm; ``rules/``: one
fold rule per file (what it matches, why not, the rewrite); ``graph``: the
pass that finds sites and dispatches; ``parts``: models torch.fx cannot trace
whole; ``api``: ``fold``.
"""
from .api import FoldResult, as_input_tuple, fold

__all__ = ["FoldResult", "as_input_tuple", "fold"]
