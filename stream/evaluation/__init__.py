"""Scoring labellers offline: metrics, bootstrap intervals, rationale faithfulness, HTML
explanations and the image-side evaluation."""
