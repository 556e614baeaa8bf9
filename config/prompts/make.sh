#!/bin/sh
# Regenerates the IVR prompts (8 kHz mono 16-bit WAV) with Debian's espeak-ng and sox.
#   config/prompts/make.sh            all languages below
# A prompt set is a directory; accounts pick one with `prompts = "<dir>"`.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# make DIR VOICE NAME TEXT
make() {
  mkdir -p "$1"
  espeak-ng -v "$2" -s 165 -p 45 -w "$tmp/raw.wav" "$4"
  # 8 kHz, -6 dBFS peak, 100 ms of silence at each end.
  sox -q "$tmp/raw.wav" -r 8000 -b 16 -c 1 "$1/$3.wav" norm -6 pad 0.1 0.1
}

make en en-gb enter_card_number "Please enter your card number, followed by the hash key."
make en en-gb invalid_card "Sorry, that card number is not valid."
make en en-gb enter_expiry "Please enter the expiry date, month and year, four digits, followed by hash."
make en en-gb expired_card "Sorry, that expiry date is not valid, or the card has expired."
make en en-gb enter_security_code "Please enter the security code from the back of your card."
make en en-gb enter_postcode "Please enter the numbers in your postcode, followed by hash."
make en en-gb invalid_entry "Sorry, that was not valid."
make en en-gb processing "Thank you. Please hold while we process your payment."
make en en-gb approved "Your payment was successful. Thank you."
make en en-gb declined "Sorry, your payment was declined."
make en en-gb too_many_attempts "Sorry, there were too many attempts."
make en en-gb goodbye "Goodbye."

make de de enter_card_number "Bitte geben Sie Ihre Kartennummer ein, gefolgt von der Rautetaste."
make de de invalid_card "Diese Kartennummer ist leider ungültig."
make de de enter_expiry "Bitte geben Sie das Ablaufdatum ein, Monat und Jahr, gefolgt von der Rautetaste."
make de de expired_card "Das Ablaufdatum ist ungültig, oder die Karte ist abgelaufen."
make de de enter_security_code "Bitte geben Sie die Prüfnummer auf der Rückseite Ihrer Karte ein."
make de de enter_postcode "Bitte geben Sie die Ziffern Ihrer Postleitzahl ein, gefolgt von der Rautetaste."
make de de invalid_entry "Diese Eingabe war leider ungültig."
make de de processing "Vielen Dank. Bitte warten Sie, Ihre Zahlung wird bearbeitet."
make de de approved "Ihre Zahlung war erfolgreich. Vielen Dank."
make de de declined "Ihre Zahlung wurde leider abgelehnt."
make de de too_many_attempts "Es gab leider zu viele Versuche."
make de de goodbye "Auf Wiederhören."

du -sh en de
