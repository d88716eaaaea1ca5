"""Models behind one small interface (`base.Model`: score options, generate): the in-process
`transformers` VLM (`vlm`), model families as records (`families`), the tiny models built from a
config (`tiny`), and the embedded default's vision pretraining (`vision`).

Nothing here is imported by the package itself until a model is needed, so configs stay light.
"""


def load_model(spec: str, served_name: str | None = None, stack=None, dtype=None):
    """The model `spec` names: a checkpoint folder (a `VLM` in this process) or a served model's base
    URL (http(s)://host:port/v1, a `ServedVLM`; its client is closed with `stack`)."""
    if spec.startswith(("http://", "https://")):
        from .served import load_served
        model = load_served(spec, served_name)
        if stack is not None:
            stack.callback(model.client.close)
        return model
    from .vlm import VLM
    return VLM.load(spec, dtype=dtype)
