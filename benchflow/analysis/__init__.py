"""Analysis: reading many trials back to answer a question.

Significance-tested comparison (:mod:`.compare`), promotion of a target's alias on
evidence (:mod:`.promotion`), the benchmark catalogue (:mod:`.catalogue`), HTML
and Markdown reports (:mod:`.report`), and synthetic trials with known answers
for tests and demos (:mod:`.synthetic`).
"""
