"""Everything that builds a bundle: export and quantize encoders, train and calibrate heads,
assemble and self-check the result. Needs the ``build`` extra (torch, transformers, onnx,
scikit-learn); the worker never imports this package."""
