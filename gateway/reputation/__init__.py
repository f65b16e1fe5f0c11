"""Dealer reputation: complaint and bounce rates, the dealer state machine, suspensions.

``records`` holds the frozen records the store keeps; ``rates`` decides from counts and
thresholds (pure); ``suspensions`` applies the decisions, keeps the suspended set the
delivery worker reads, and raises the alerts.
"""
