"""MedFMAdapt's domain core: FM backends, volumes and prompts, PEFT adaptation, adapter store, metrics.

Imports only torch, monai, peft, numpy and SimpleITK — never monailabel — so it runs on a bare GPU box,
in a benchmark or in a notebook. The MONAI Label classes in configs/, infers/ and trainers/ are thin glue over it.
"""
