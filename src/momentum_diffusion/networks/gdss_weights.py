"""GDSS's released checkpoints (Jo et al. 2022; github.com/harryjo97/GDSS, ``checkpoints/<data>/gdss_<data>.pth``)
as ``GraphScoreNetwork`` weights, so that GDSS's own models can be sampled and scored with this package's samplers
and metrics (``scripts/import_gdss_checkpoint.py``).

GDSS trains two networks: ScoreNetworkX (DenseGCN layers, tanh, concatenation, 3-layer ELU MLP) and ScoreNetworkA
(graph multi-head attention layers over [A, A², …], edge MLPs, 3-layer readout), each predicting the noise of
its block (VP: score = −net / σ_t), neither seeing t. ``GraphScoreNetwork`` with ``time_conditioning=false`` is
the same function once

* its attention temperature is matched: GDSS divides QKᵀ by √(GCN output width), this network by √(attention
  width); Q is scaled by √(attention width / output width) (1 for GDSS's configs, where both are ``nhid``);
* its linear skip (the Gaussian part ε̂ = Σ c_i(t) z_i + offset on the graph coordinates) is off
  (``linear_skip=false``; its weights are also zeroed: the last layer of ``pad_head`` keeps only the padded
  coordinates' pull to 0).

Supported: VP on X and A with the same β range (community_small, ego_small). GDSS's grid (different β per block)
and ENZYMES (VE on A, whose network is the score itself, not ε) do not map onto one process: one error line.
"""

from __future__ import annotations

import math
import pickle
import types
from pathlib import Path

import torch

from .graph import GraphScoreNetwork

__all__ = [
    "GdssCheckpointError",
    "read_gdss_checkpoint",
    "gdss_settings",
    "graph_score_state_from_gdss",
    "gdss_ema_state",
]


class GdssCheckpointError(ValueError):
    pass


class _AttrDict(dict):
    """Stands in for easydict.EasyDict (GDSS pickles its config as one) so that easydict need not be installed."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split(".")[0] == "easydict":
            return _AttrDict
        return super().find_class(module, name)


_lenient_pickle = types.SimpleNamespace(Unpickler=_Unpickler, load=lambda f, **kw: _Unpickler(f, **kw).load())
_lenient_pickle.__name__ = "gdss_lenient_pickle"


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def read_gdss_checkpoint(path) -> dict:
    """A GDSS ``.pth``: model_config, params_x / params_adj, x_state_dict / adj_state_dict, ema_x / ema_adj."""
    path = Path(str(path))
    if not path.is_file():
        raise GdssCheckpointError(f"GDSS checkpoint not found: {path} (GDSS's repository: checkpoints/<data>/*.pth)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle)
    except Exception as exc:
        raise GdssCheckpointError(f"{path} is corrupt or not a PyTorch checkpoint ({type(exc).__name__})") from None
    keys = ("model_config", "params_x", "params_adj", "x_state_dict", "adj_state_dict", "ema_x", "ema_adj")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in keys):
        raise GdssCheckpointError(f"{path} is not a GDSS generic-graph checkpoint (needs {', '.join(keys)})")
    return {k: _plain(v) for k, v in ckpt.items()}


def gdss_settings(ckpt: dict) -> dict:
    """What a GDSS checkpoint means in this package's config: ``model`` (GraphScoreNetwork keys), ``diffusion``
    (VP β range), ``sampler`` (PC snr and corrector noise scale), ``data`` (name, max_nodes, n_features) and
    ``use_ema`` (GDSS's sampling choice for this data set)."""
    cfg, px, pa = ckpt["model_config"], ckpt["params_x"], ckpt["params_adj"]
    if px.get("model_type") != "ScoreNetworkX" or pa.get("model_type") != "ScoreNetworkA" or pa.get("conv") != "GCN":
        raise GdssCheckpointError(
            f"only GDSS's ScoreNetworkX + ScoreNetworkA (GCN) map onto GraphScoreNetwork, got "
            f"{px.get('model_type')} + {pa.get('model_type')} ({pa.get('conv')})"
        )
    sx, sa = cfg["sde"]["x"], cfg["sde"]["adj"]
    if sx["type"] != "VP" or sa["type"] != "VP":
        raise GdssCheckpointError(
            f"GDSS's SDEs are {sx['type']} (X) / {sa['type']} (A); only VP on both blocks maps onto this package's "
            "ε-parameterised networks (a VE network predicts the score itself)"
        )
    if (sx["beta_min"], sx["beta_max"]) != (sa["beta_min"], sa["beta_max"]):
        raise GdssCheckpointError(
            f"GDSS's X and A use different β ranges ({sx['beta_min']}–{sx['beta_max']} vs "
            f"{sa['beta_min']}–{sa['beta_max']}); one process diffuses both blocks here"
        )
    model = {
        "x_depth": int(px["depth"]),
        "x_hidden": int(px["nhid"]),
        "a_layers": int(pa["num_layers"]),
        "a_linears": int(pa["num_linears"]),
        "c_init": int(pa["c_init"]),
        "c_hid": int(pa["c_hid"]),
        "c_final": int(pa["c_final"]),
        "adim": int(pa["adim"]),
        "heads": int(pa["num_heads"]),
        "a_hidden": int(pa["nhid"]),
        "time_conditioning": False,
        "linear_skip": False,
    }
    sampler = cfg.get("sampler", {})
    return {
        "model": model,
        "diffusion": {"beta_min": float(sx["beta_min"]), "beta_max": float(sx["beta_max"])},
        "sampler": {"snr": float(sampler.get("snr", 0.1)), "noise_scale": float(sampler.get("scale_eps", 1.0))},
        "data": {
            "name": cfg["data"]["data"],
            "max_nodes": int(pa["max_node_num"]),
            "n_features": int(px["max_feat_num"]),
        },
        "use_ema": bool(cfg.get("sample", {}).get("use_ema", True)),
    }


def gdss_ema_state(ema: dict, state: dict) -> dict:
    """GDSS's EMA (``ema_x`` / ``ema_adj``: decay, num_updates and ``shadow_params``, a list in the order of the
    network's parameters) as a state dict with the keys of ``state`` (the trained network's)."""
    shadow = list(ema.get("shadow_params", []))
    if len(shadow) != len(state) or any(tuple(s.shape) != tuple(v.shape) for s, v in zip(shadow, state.values())):
        raise GdssCheckpointError(f"GDSS's EMA: {len(shadow)} tensors do not line up with its {len(state)} weights")
    return dict(zip(state.keys(), shadow))


def _linears(prefix: str, n: int) -> list[str]:
    return [f"{prefix}.linears.{i}" for i in range(n)]


def graph_score_state_from_gdss(x_state: dict, adj_state: dict, net: GraphScoreNetwork) -> dict:
    """``net``'s state dict with GDSS's two networks' weights (``x_state``: ScoreNetworkX, ``adj_state``:
    ScoreNetworkA) and the linear skip set to zero (module docstring). ``net`` must be built with GDSS's sizes
    (``gdss_settings(...)["model"]``) for one block in and one out (VP)."""
    if net.k != 1 or net.out_blocks != 1 or net.time_conditioning:
        raise GdssCheckpointError("GDSS's weights fit a t-free GraphScoreNetwork for one block (VP) only")
    new = {k: v.clone() for k, v in net.state_dict().items()}
    pairs: list[tuple[str, str]] = []  # (ours, GDSS's) for tensors copied as they are
    for i in range(len(net.x_convs)):
        pairs += [(f"x_convs.{i}.weight", f"x.layers.{i}.weight"), (f"x_convs.{i}.bias", f"x.layers.{i}.bias")]
    for i, name in enumerate(_linears("x.final", 3)):
        pairs += [(f"x_out.{2 * i}.weight", f"{name}.weight"), (f"x_out.{2 * i}.bias", f"{name}.bias")]
    for i, name in enumerate(_linears("adj.final", 3)):
        pairs += [(f"a_out.{2 * i}.weight", f"{name}.weight"), (f"a_out.{2 * i}.bias", f"{name}.bias")]
    gdss = {**{f"x.{k}": v for k, v in x_state.items()}, **{f"adj.{k}": v for k, v in adj_state.items()}}
    used: set[str] = set()
    for li, layer in enumerate(net.a_layers):
        src = f"adj.layers.{li}"
        for i, name in enumerate(_linears(f"{src}.multi_channel", 2)):
            pairs += [(f"a_layers.{li}.node_mlp.{2 * i}.weight", f"{name}.weight")]
            pairs += [(f"a_layers.{li}.node_mlp.{2 * i}.bias", f"{name}.bias")]
        n_edge = sum(isinstance(m, torch.nn.Linear) for m in layer.edge_mlp)
        for i, name in enumerate(_linears(f"{src}.mlp", n_edge)):
            pairs += [(f"a_layers.{li}.edge_mlp.{2 * i}.weight", f"{name}.weight")]
            pairs += [(f"a_layers.{li}.edge_mlp.{2 * i}.bias", f"{name}.bias")]
        q_scale = math.sqrt(layer.attn_dim / layer.out_dim)  # GDSS: QKᵀ/√out_dim; here QKᵀ/√attn_dim
        weights, biases = [], []
        for c in range(layer.weight.shape[0]):
            parts = [f"{src}.attn.{c}.gnn_{x}" for x in "qkv"]
            for p in parts:
                used.update((f"{p}.weight", f"{p}.bias"))
            w = [_take(gdss, f"{p}.weight") for p in parts]
            b = [_take(gdss, f"{p}.bias") for p in parts]
            weights.append(torch.cat([w[0] * q_scale, w[1], w[2]], -1))
            biases.append(torch.cat([b[0] * q_scale, b[1], b[2]], -1))
        _put(new, f"a_layers.{li}.weight", torch.stack(weights))
        _put(new, f"a_layers.{li}.bias", torch.stack(biases))
    for ours, theirs in pairs:
        _put(new, ours, _take(gdss, theirs))
        used.add(theirs)
    left = sorted(set(gdss) - used)
    if left:
        raise GdssCheckpointError(f"GDSS weights left unmapped ({len(left)}, e.g. {left[0]}): sizes differ")
    # the linear skip off: ε̂ = GNN on graph coordinates; padded coordinates keep their pull ε̂ = z to 0
    head = net.pad_head[-1]
    k, O = net.k, net.out_blocks
    prefix = "pad_head." + str(len(net.pad_head) - 1)
    bias = torch.zeros_like(head.bias)
    bias[: O * (k + 1)].view(O, k + 1)[:, k - 1] = 1.0
    _put(new, f"{prefix}.weight", torch.zeros_like(head.weight))
    _put(new, f"{prefix}.bias", bias)
    return new


def _take(state: dict, key: str) -> torch.Tensor:
    if key not in state:
        raise GdssCheckpointError(f"GDSS checkpoint lacks {key}: its sizes differ from the network's")
    return state[key]


def _put(state: dict, key: str, value: torch.Tensor) -> None:
    if tuple(state[key].shape) != tuple(value.shape):
        raise GdssCheckpointError(f"{key}: GDSS tensor {tuple(value.shape)} vs network {tuple(state[key].shape)}")
    state[key] = value.to(state[key].dtype).clone()
