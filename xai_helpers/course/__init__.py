"""The course's material: the pretrained model, the photos, the synthetic data sets and the checked exercises.

============  ==============================================================
``model``     EfficientNet-Lite0 (and ResNet-50 when cached), loaded offline
``images``    the sample photos and robust image loading
``synthetic`` the synthetic shapes with exact object masks, and their models
``exercises`` ``check(exercise_id, fn)``: hidden cases, named mistakes
``answers``   interpretation exercises, checked against a lesson's own values
``claims``    ``claim(...)``: a lesson's statement about its outputs, checked where it is made
============  ==============================================================
"""

from .exercises import EXERCISES, check
from .images import SAMPLES, load_image, sample_path
from .model import LoadedModel, imagenet_categories, load_model

__all__ = ["EXERCISES", "LoadedModel", "SAMPLES", "check", "imagenet_categories", "load_image", "load_model",
           "sample_path"]
