"""HSM: hybrid score matching for CLD (Dockhorn et al. 2022, Sec. 3.2, eq. 11).

x_0 given, v_0 ~ N(0, γM) marginalised analytically in the kernel; target = velocity-block score −ℓ_t ε_v.
Default weighting `eps` with the mixed score, as the paper's CIFAR-10 runs."""

from .noise_prediction import NoisePredictionObjective


class HSM(NoisePredictionObjective):
    name = "hsm"
    orders = (2, 2)
