"""Interactive visualizers (ipywidgets) for the codebook chapter; each works without a front end too.

Each function returns a widget (a :class:`~vqvae_lib.widgets.base.Visualizer`: ``.state`` is its
logic, ``.controls`` its sliders and buttons, ``.message`` where refused choices are explained):

- :func:`codebook_atlas` (vqvae, images): every code as a tile, ordered by usage; where a code occurs.
- :func:`latent_editor` (vqvae, image): change one code of the grid, see the decoded image change.
- :func:`quantisation_playground` (): a 2-D codebook, collapse and its remedies.
- :func:`commitment_kl_explorer` (): the commitment loss as a KL between two Gaussians.
- :func:`prior_sampler` (vqvae, prior, grid_shape): temperature, class, samples.
"""
from .atlas import CodebookAtlasState, codebook_atlas
from .base import Visualizer
from .editor import LatentEditorState, decoder_reach, latent_editor
from .kl import commitment_kl_explorer, kl_quadrature, kl_readout
from .playground import PlaygroundState, gaussian_mixture, quantisation_playground
from .sampler import PriorSamplerState, prior_sampler

__all__ = ["CodebookAtlasState", "LatentEditorState", "PlaygroundState", "PriorSamplerState", "Visualizer",
           "codebook_atlas", "commitment_kl_explorer", "decoder_reach", "gaussian_mixture", "kl_quadrature",
           "kl_readout", "latent_editor", "prior_sampler", "quantisation_playground"]
