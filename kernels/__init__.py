"""Pure, vectorised functions over array-API namespaces (numpy | cupy | array-api-strict); no I/O."""
