"""Sluice's Python worker: connects to Sluice's FunctionRpc server and runs the app's
functions through the platform's runtime library (azure_functions_runtime for v2 apps,
azure_functions_runtime_v1 for v1 apps)."""
