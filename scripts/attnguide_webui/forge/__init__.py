"""The WebUI methods on Forge and reForge: backend.apply(method, unet_patcher, params) -> a patched clone.
One file per method; router, host, params and grad are the machinery over Forge's ComfyUI-shaped patcher,
webui reads what only the WebUI knows from a generation."""
