"""Models behind one small interface (`base.Model`: score options, generate): the in-process
`transformers` VLM (`vlm`), model families as records (`families`), the tiny models built from a
config (`tiny`), and the embedded default's vision pretraining (`vision`).

Nothing here is imported by the package itself until a model is needed, so configs stay light.
"""
