"""Interactive visualizers (ipywidgets) for the codebook chapter; each works without a front end too.

Each function returns a widget (a :class:`~vqvae_lib.widgets.base.Visualizer`: ``.state`` is its
logic, ``.controls`` its sliders and buttons, ``.message`` where refused choices are explained and
``.has_error`` whether it shows one now):

- :func:`codebook_atlas` (vqvae, images): every code as a tile, ordered by usage; where a code occurs.
- :func:`latent_editor` (vqvae, image): change one code of the grid, see the decoded image change.
- :func:`quantization_playground` (): a 2-D codebook, collapse and its remedies (:data:`REMEDIES`).
- :func:`commitment_kl_explorer` (): the commitment loss as a KL between two Gaussians.
- :func:`prior_sampler` (vqvae, prior, grid_shape): temperature, class, samples.

:func:`decoder_reach` derives how far an edit of one latent cell can reach from the decoder's layers;
:func:`measured_reach` measures it by changing a cell and watching which pixels move.
"""
from .atlas import CodebookAtlasState, codebook_atlas
from .base import Visualizer
from .editor import LatentEditorState, decoder_reach, latent_editor, measured_reach
from .kl import commitment_kl_explorer, kl_quadrature, kl_readout
from .playground import REMEDIES, RESTART_AFTER, PlaygroundState, gaussian_mixture, quantization_playground
from .sampler import PriorSamplerState, prior_sampler

__all__ = ["REMEDIES", "RESTART_AFTER", "CodebookAtlasState", "LatentEditorState", "PlaygroundState",
           "PriorSamplerState", "Visualizer", "codebook_atlas", "commitment_kl_explorer", "decoder_reach",
           "gaussian_mixture", "kl_quadrature", "kl_readout", "latent_editor", "measured_reach", "prior_sampler",
           "quantization_playground"]
