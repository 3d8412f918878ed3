"""What the queue says to callers, per language (TTS text)."""

_TEXT = {
    "it": {
        "position": "Lei è il numero {n} in coda.",
        "ewt": "Il tempo di attesa stimato è di circa {m} minuti.",
        "ewt_short": "Il tempo di attesa stimato è inferiore a un minuto.",
        "comfort": "Tutti i nostri operatori sono occupati. La preghiamo di restare in linea.",
        "offer_callback": "Se preferisce essere richiamato al numero da cui chiama, mantenendo il suo posto, "
                          "prema 1.",
        "callback_ok": "Grazie, la richiameremo appena un operatore sarà libero. Arrivederci.",
        "goodbye": "Al momento non è possibile rispondere. La preghiamo di richiamare più tardi. Arrivederci.",
        "voicemail": "Nessun operatore disponibile. Lasci un messaggio dopo il segnale acustico; "
                     "per terminare, riagganci o resti in silenzio.",
        "voicemail_thanks": "Grazie, il suo messaggio è stato registrato. La richiameremo. Arrivederci.",
        "transferring": "Attenda in linea, la stiamo trasferendo.",
        "voicemail_key": "Per lasciare un messaggio invece di attendere, prema {k}.",
    },
    "en": {
        "position": "You are number {n} in the queue.",
        "ewt": "The estimated wait is about {m} minutes.",
        "ewt_short": "The estimated wait is less than a minute.",
        "comfort": "All our agents are busy. Please stay on the line.",
        "offer_callback": "To be called back on the number you are calling from, keeping your place, press 1.",
        "callback_ok": "Thank you, we will call you back as soon as an agent is free. Goodbye.",
        "goodbye": "We cannot take your call right now. Please call again later. Goodbye.",
        "voicemail": "No agent is available. Please leave a message after the tone; to finish, hang up or "
                     "stay silent.",
        "voicemail_thanks": "Thank you, your message has been recorded. We will call you back. Goodbye.",
        "transferring": "Please hold, we are transferring your call.",
        "voicemail_key": "To leave a message instead of waiting, press {k}.",
    },
}
