"""The analysts' review page: the review topic's events one at a time, least confident first,
each answer produced to the feedback topic (``crisis-stream review``; docs/review.md).

The page is a view: its queue and progress are rebuilt from the review and feedback topics at
every start, and it owns no offsets.
"""

from stream.review.service import DEFAULT_PORT, Review, ReviewConfig
from stream.review.web import build_app, run_review, serve

__all__ = ["DEFAULT_PORT", "Review", "ReviewConfig", "build_app", "run_review", "serve"]
