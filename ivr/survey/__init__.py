"""Customer-satisfaction surveys on the keypad: scripts (``script``), the sans-IO interpreter
(``interpreter``), the asyncio runner on a call (``runner``) and the post-call offer (``postcall``).

The answers are stored by ``crm_bridge.surveys.SurveyStore``; outbound campaigns (``ivr.campaign``) run the same
scripts with the same runner.
"""
