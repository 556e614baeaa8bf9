//! The words of the caller's pages, per language (the languages of the prompt sets). The
//! agent's screen is in English (`agent.rs`).

use crate::card::money::Locale;
use crate::card::CardError;

/// Every text of the hosted payment page and its message pages, in one language.
pub(super) struct Texts {
    pub amount: &'static str,
    pub reference: &'static str,
    pub cardholder: &'static str,
    pub pay_securely: &'static str,
    pub card_number: &'static str,
    pub expiry: &'static str,
    pub expiry_placeholder: &'static str,
    pub cvc: &'static str,
    pub postcode: &'static str,
    /// The pay button; `{amount}` is replaced.
    pub pay_amount: &'static str,
    /// Above a form that came back with errors.
    pub check_fields: &'static str,
    /// The page's script, under a card number that fails the check digit.
    pub check_number: &'static str,
    pub enter_number: &'static str,
    pub enter_expiry: &'static str,
    pub enter_cvc: &'static str,
    pub enter_postcode: &'static str,
    pub luhn: &'static str,
    pub unknown_brand: &'static str,
    pub length: &'static str,
    pub expiry_format: &'static str,
    pub expired: &'static str,
    pub expiry_too_far: &'static str,
    pub cvv_length: &'static str,
    pub postcode_length: &'static str,
    pub not_found: (&'static str, &'static str),
    pub link_expired: (&'static str, &'static str),
    pub link_used: (&'static str, &'static str),
    pub link_replaced: (&'static str, &'static str),
    pub closed: (&'static str, &'static str),
    pub approved: &'static str,
    /// `{amount}`, `{last4}` and `{reference}` are replaced.
    pub approved_text: &'static str,
    /// The same for a wallet payment (no card shown to us): `{amount}`, `{reference}`.
    pub approved_wallet_text: &'static str,
    pub declined: (&'static str, &'static str),
    pub failed: (&'static str, &'static str),
}

impl Texts {
    /// What to tell the customer about a card field the server refused.
    pub fn card_error(&self, e: CardError) -> &'static str {
        match e {
            CardError::Luhn => self.luhn,
            CardError::UnknownBrand => self.unknown_brand,
            CardError::Length => self.length,
            CardError::ExpiryFormat => self.expiry_format,
            CardError::Expired => self.expired,
            CardError::ExpiryTooFar => self.expiry_too_far,
            CardError::CvvLength => self.cvv_length,
            CardError::PostcodeLength => self.postcode_length,
        }
    }
}

/// The texts for `locale`.
pub(super) fn for_locale(locale: Locale) -> &'static Texts {
    match locale {
        Locale::En => &EN,
        Locale::De => &DE,
    }
}

const EN: Texts = Texts {
    amount: "Amount",
    reference: "Reference",
    cardholder: "Cardholder",
    pay_securely: "Pay securely",
    card_number: "Card number",
    expiry: "Expiry date (MM/YY)",
    expiry_placeholder: "MM/YY",
    cvc: "Security code",
    postcode: "Postcode",
    pay_amount: "Pay {amount}",
    check_fields: "Please check the fields marked below.",
    check_number: "check the number",
    enter_number: "Enter the long number on the front of your card.",
    enter_expiry: "Enter the expiry date as MM/YY.",
    enter_cvc: "Enter the 3 or 4 digit security code.",
    enter_postcode: "Enter your postcode.",
    luhn: "This card number is not valid. Check it and enter it again.",
    unknown_brand: "This type of card is not accepted. Please use another card.",
    length: "This card number has the wrong number of digits.",
    expiry_format: "Enter the expiry date as MM/YY, for example 08/27.",
    expired: "This card has expired. Please use another card.",
    expiry_too_far: "This expiry date is too far in the future. Check it and enter it again.",
    cvv_length: "The security code has the wrong number of digits.",
    postcode_length: "This postcode has the wrong number of digits.",
    not_found: (
        "Link not found",
        "This payment link does not exist. Check the message you received.",
    ),
    link_expired: (
        "Link expired",
        "This payment link has expired. Ask for a new link to pay.",
    ),
    link_used: (
        "Link already used",
        "This payment link has already been used. Each link works once.",
    ),
    link_replaced: (
        "Link replaced",
        "A newer payment link was sent to you. Please use that one.",
    ),
    closed: (
        "Payment closed",
        "This payment is already closed; the link no longer works.",
    ),
    approved: "Payment approved",
    approved_text:
        "Thank you. {amount} was paid with the card ending {last4}. Reference: {reference}.",
    approved_wallet_text: "Thank you. {amount} was paid. Reference: {reference}.",
    declined: (
        "Payment declined",
        "Your bank declined the card. No money was taken. Ask for a new link to try another card.",
    ),
    failed: (
        "Payment failed",
        "We could not complete the payment. No money was taken. Please try again later.",
    ),
};

const DE: Texts = Texts {
    amount: "Betrag",
    reference: "Referenz",
    cardholder: "Karteninhaber",
    pay_securely: "Sicher bezahlen",
    card_number: "Kartennummer",
    expiry: "Gültig bis (MM/JJ)",
    expiry_placeholder: "MM/JJ",
    cvc: "Prüfnummer",
    postcode: "Postleitzahl",
    pay_amount: "{amount} bezahlen",
    check_fields: "Bitte prüfen Sie die markierten Felder.",
    check_number: "Nummer prüfen",
    enter_number: "Geben Sie die lange Nummer auf der Vorderseite Ihrer Karte ein.",
    enter_expiry: "Geben Sie das Ablaufdatum als MM/JJ ein.",
    enter_cvc: "Geben Sie die 3- oder 4-stellige Prüfnummer ein.",
    enter_postcode: "Geben Sie Ihre Postleitzahl ein.",
    luhn: "Diese Kartennummer ist ungültig. Bitte prüfen Sie sie und geben Sie sie erneut ein.",
    unknown_brand: "Diese Kartenart wird nicht akzeptiert. Bitte verwenden Sie eine andere Karte.",
    length: "Diese Kartennummer hat die falsche Anzahl an Ziffern.",
    expiry_format: "Geben Sie das Ablaufdatum als MM/JJ ein, zum Beispiel 08/27.",
    expired: "Diese Karte ist abgelaufen. Bitte verwenden Sie eine andere Karte.",
    expiry_too_far: "Dieses Ablaufdatum liegt zu weit in der Zukunft. Bitte prüfen Sie es.",
    cvv_length: "Die Prüfnummer hat die falsche Anzahl an Ziffern.",
    postcode_length: "Diese Postleitzahl hat die falsche Anzahl an Ziffern.",
    not_found: (
        "Link nicht gefunden",
        "Diesen Zahlungslink gibt es nicht. Bitte prüfen Sie die erhaltene Nachricht.",
    ),
    link_expired: (
        "Link abgelaufen",
        "Dieser Zahlungslink ist abgelaufen. Bitte fordern Sie einen neuen Link an.",
    ),
    link_used: (
        "Link bereits verwendet",
        "Dieser Zahlungslink wurde bereits verwendet. Jeder Link funktioniert nur einmal.",
    ),
    link_replaced: (
        "Link ersetzt",
        "Sie haben einen neueren Zahlungslink erhalten. Bitte verwenden Sie diesen.",
    ),
    closed: (
        "Zahlung abgeschlossen",
        "Diese Zahlung ist bereits abgeschlossen; der Link funktioniert nicht mehr.",
    ),
    approved: "Zahlung erfolgreich",
    approved_text:
        "Vielen Dank. {amount} wurde mit der Karte mit den Endziffern {last4} bezahlt. Referenz: {reference}.",
    approved_wallet_text: "Vielen Dank. {amount} wurde bezahlt. Referenz: {reference}.",
    declined: (
        "Zahlung abgelehnt",
        "Ihre Bank hat die Karte abgelehnt. Es wurde kein Geld abgebucht. Fordern Sie einen neuen Link an, um eine andere Karte zu verwenden.",
    ),
    failed: (
        "Zahlung fehlgeschlagen",
        "Die Zahlung konnte nicht abgeschlossen werden. Es wurde kein Geld abgebucht. Bitte versuchen Sie es später erneut.",
    ),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_every_text_and_its_placeholders() {
        for l in [Locale::En, Locale::De] {
            let t = for_locale(l);
            assert!(t.pay_amount.contains("{amount}"), "{l:?}");
            for p in ["{amount}", "{last4}", "{reference}"] {
                assert!(t.approved_text.contains(p), "{l:?} {p}");
            }
        }
        // German is German, not English with a German lang attribute.
        assert_ne!(for_locale(Locale::De).pay_securely, EN.pay_securely);
        assert_ne!(for_locale(Locale::De).card_error(CardError::Luhn), EN.luhn);
    }
}
