"""Running many images: input discovery (inputs), the output folder layout (layout), the worker pool (pool)."""
