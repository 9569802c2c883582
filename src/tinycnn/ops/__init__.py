"""The fast, vectorised ops: each a forward/backward pair of plain functions.

Layout is PyTorch's: data ``(N, C, H, W)``, kernels ``(F, C, kH, kW)``. ``tinycnn.naive`` holds
the same ops as plain loops; the tests check each fast op against it, finite differences and
PyTorch autograd.
"""
