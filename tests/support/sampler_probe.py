"""Run by the A1111 venv's python in the webui folder (test_double_agrees.py): prints, as JSON,
what A1111's own sampler tables give a Sampler as `funcname` (sd_samplers_kdiffusion.samplers_k_diffusion,
sd_samplers_timesteps.samplers_timesteps; sd_samplers_common.Sampler.__init__ keeps it as given)."""
import json
import os
import sys
import types

sys.argv = sys.argv[:1]  # A1111 parses the command line on import
sys.path.insert(0, os.getcwd())  # the webui folder
from modules import initialize  # noqa: E402

initialize.imports()
from modules import sd_models, sd_samplers_common, sd_samplers_kdiffusion, sd_samplers_timesteps  # noqa: E402

# Sampler.__init__ reads shared.sd_model.model.conditioning_key; no checkpoint is loaded for this
sd_models.model_data.sd_model = types.SimpleNamespace(model=types.SimpleNamespace(conditioning_key="crossattn"))
out = {}
for table, kind in ((sd_samplers_kdiffusion.samplers_k_diffusion, "k-diffusion"),
                    (sd_samplers_timesteps.samplers_timesteps, "timesteps")):
    for label, funcname, _aliases, _options in table:
        kept = sd_samplers_common.Sampler(funcname).funcname
        out[label] = {"kind": kind, "str": isinstance(kept, str), "name": kept if isinstance(kept, str) else kept.__name__}
print("PROBE " + json.dumps(out))
