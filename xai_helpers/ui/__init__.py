"""What a learner sees: figures, the comparison dashboard and the command line.

=============  ==============================================================
``figures``    overlays and figure grids with colour-blind-safe colormaps and colourbars
``dashboard``  the comparison dashboard (ipywidgets; served with Voila)
``cli``        ``python -m xai_helpers explain IMAGE``
=============  ==============================================================
"""

from .dashboard import Dashboard, DashboardState, dashboard
from .figures import SAFE_CMAPS, SIGNED_CMAP, overlay, plot_overlays, plot_signed, signed_overlay

__all__ = ["Dashboard", "DashboardState", "SAFE_CMAPS", "SIGNED_CMAP", "dashboard", "overlay", "plot_overlays",
           "plot_signed", "signed_overlay"]
