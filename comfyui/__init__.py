"""The pack's ComfyUI machinery: the router's install on a ModelPatcher, the shared prefix, the
panorama's tiler, Attend-and-Excite's and Pix2Pix-Zero's sampling. The nodes (nodes/) build on it."""
