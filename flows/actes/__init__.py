"""@ctes: transmission of actes to the contrôle de légalité (préfecture) and its replies.

intake (ZIP from the agent) -> validate -> transmission (tar.gz for the ministère) ->
messages (replies from the ministère) ; classification (matières, typologies).
"""
