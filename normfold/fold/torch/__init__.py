"""The torch.fx front end: trace an nn.Module, find norm sites, fold them with the shared algebra.

``trace``: torch.fx with norms as leaves; ``rules/``: one fold rule per file
(what it matches, why not, the rewrite); ``graph``: the pass that finds sites
and dispatches.
"""
from .graph import FoldResult, as_input_tuple, fold

__all__ = ["FoldResult", "as_input_tuple", "fold"]
