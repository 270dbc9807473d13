"""The CrisisMMD tasks the shipped bundles are trained on, and their labels in head order.

A contract shared by the dataset readers, the build and the tests; a bundle may add tasks and
labels (``crisis-stream models add-label``), so the runtime reads its labels from the manifest.
"""

from __future__ import annotations

__all__ = ["LABELS"]

LABELS: dict[str, list[str]] = {
    "informative": ["informative", "not_informative"],
    "humanitarian": [
        "affected_individuals",
        "infrastructure_and_utility_damage",
        "not_humanitarian",
        "other_relevant_information",
        "rescue_volunteering_or_donation_effort",
    ],
}
