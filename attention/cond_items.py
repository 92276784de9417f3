"""One image's share of a batch of host conds (ComfyUI, Forge and reForge cond dicts alike)."""
import torch


def item_conds(conds, item):
    """The conds as image `item` of the batch sees them (the host repeats a batch of conds
    cyclically over the latent batch), for a batch-1 forward."""
    out = []
    for c in conds:
        model_conds = {}
        for k, v in c.get("model_conds", {}).items():
            t = getattr(v, "cond", None)
            if torch.is_tensor(t) and t.shape[0] > 1 and hasattr(v, "_copy_with"):
                j = item % t.shape[0]
                v = v._copy_with(t[j:j + 1])
            model_conds[k] = v
        out.append({**c, "model_conds": model_conds})
    return out
