"""``beoacct report``: one self-contained HTML page of plots over time.

``since`` reads ``--since``; ``series`` turns accounting rows into time bins
(no plotting); ``plots`` draws them with matplotlib (imported only there, so
``beoacct``'s other commands start without it); ``page`` writes the HTML;
``build`` puts the page together from the rows ``beoacct`` fetched.
"""
