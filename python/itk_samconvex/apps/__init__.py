"""Layer 3, the applications: ``evaluate`` (the one scorer), ``outputs`` (what a registered
pair writes), ``qc`` (the QC report), ``batch`` (many pairs on Dask), ``export`` (the solver
for the C++ filter), ``training`` (SAM), ``phantom`` (synthetic pairs). They import the edge
and the solver, never the CLI, and never itk directly (only through ``edge``).
"""
