"""Analysis and pictures of a Modular AE: the decomposition sheet and the characterisation of what
each module encodes."""
