"""Countries the sample customers live in: cities with real post-code ranges and area codes,
street names, personal names, legal forms and phone-number formats.

Pure data plus small formatting functions over a ``random.Random``; nothing here touches the
database. Phone numbers use the ranges reserved for fiction where a country has them
(US 555-01xx, UK Ofcom drama numbers)."""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class City:
    """A city, the post codes drawn for it (inclusive range, or a list of districts for the
    UK), its telephone area code and, for the US, the state (NAV's County)."""

    name: str
    post_low: int
    post_high: int
    area_code: str
    county: str | None = None
    districts: tuple[str, ...] = ()

    @property
    def short_name(self) -> str:
        """The name as a company would use it: ``København K`` gives ``København``."""
        words = self.name.split()
        if len(words) > 1 and len(words[-1]) == 1:  # postal district letter
            words = words[:-1]
        return " ".join(words).removesuffix(" am Main")


@dataclass(frozen=True)
class Country:
    """Everything needed to invent a plausible company and its people in one country."""

    code: str
    currency: str
    weight: int
    cities: tuple[City, ...]
    streets: tuple[str, ...]
    street_number_first: bool
    first_names: tuple[str, ...]
    surnames: tuple[str, ...]
    legal_forms: tuple[str, ...]
    industries: tuple[str, ...]
    post_code: Callable[[random.Random, City], str]
    phone: Callable[[random.Random, City], str]
    mobile: Callable[[random.Random], str]
    vat_no: Callable[[random.Random], str | None]
    address_2: tuple[str, ...] = ()

    def street_address(self, rng: random.Random) -> str:
        street, number = rng.choice(self.streets), rng.randint(1, 180)
        return f"{number} {street}" if self.street_number_first else f"{street} {number}"


def _digits(rng: random.Random, count: int) -> str:
    return str(rng.randrange(10**count)).rjust(count, "0")


def _numeric_post_code(width: int) -> Callable[[random.Random, City], str]:
    def draw(rng: random.Random, city: City) -> str:
        return str(rng.randint(city.post_low, city.post_high)).rjust(width, "0")
    return draw


def _uk_post_code(rng: random.Random, city: City) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"  # the letters the inward code uses
    return f"{rng.choice(city.districts)} {rng.randint(1, 9)}{rng.choice(letters)}" \
        f"{rng.choice(letters)}"


def _se_post_code(rng: random.Random, city: City) -> str:
    code = str(rng.randint(city.post_low, city.post_high))
    return f"{code[:3]} {code[3:]}"


def _nl_post_code(rng: random.Random, city: City) -> str:
    letters = "ABCDEGHJKLMNPRSTVWXZ"
    number = rng.randint(city.post_low, city.post_high)
    return f"{number} {rng.choice(letters)}{rng.choice(letters)}"


def _grouped(prefix: str, groups: tuple[int, ...]) -> Callable[[random.Random, City], str]:
    """+CC <area> then digit groups, e.g. ``+45 33 12 34 56``."""
    def draw(rng: random.Random, city: City) -> str:
        return " ".join((prefix, city.area_code, *(_digits(rng, n) for n in groups)))
    return draw


def _us_phone(rng: random.Random, city: City) -> str:
    return f"+1 {city.area_code}-555-01{_digits(rng, 2)}"


def _uk_phone(rng: random.Random, city: City) -> str:
    return f"+44 {city.area_code} 0{_digits(rng, 3)}"


def _de_phone(rng: random.Random, city: City) -> str:
    return f"+49 {city.area_code} {_digits(rng, 9 - len(city.area_code))}"


def _mobile(prefix: str, *groups: int) -> Callable[[random.Random], str]:
    def draw(rng: random.Random) -> str:
        return " ".join((prefix, *(_digits(rng, n) for n in groups)))
    return draw


def _vat(prefix: str, digits: int, suffix: str = "") -> Callable[[random.Random], str]:
    def draw(rng: random.Random) -> str:
        return f"{prefix}{rng.choice('123456789')}{_digits(rng, digits - 1)}{suffix}"
    return draw


def _no_vat(rng: random.Random) -> str | None:
    return None


COUNTRIES: tuple[Country, ...] = (
    Country(
        "DE", "EUR", 25,
        cities=(
            City("Berlin", 10115, 14199, "30"), City("Hamburg", 20095, 22769, "40"),
            City("München", 80331, 81929, "89"), City("Köln", 50667, 51149, "221"),
            City("Frankfurt am Main", 60306, 60599, "69"), City("Stuttgart", 70173, 70629, "711"),
            City("Düsseldorf", 40210, 40629, "211"), City("Leipzig", 4103, 4357, "341"),
        ),
        streets=("Hauptstraße", "Bahnhofstraße", "Industriestraße", "Lindenallee", "Am Markt",
                 "Schillerstraße", "Goethestraße", "Friedrichstraße", "Kantstraße",
                 "Gewerbepark", "Mühlenweg", "Hafenstraße"),
        street_number_first=False,
        first_names=("Thomas", "Andreas", "Stefan", "Michael", "Julia", "Katrin", "Sabine",
                     "Anja", "Jan", "Tobias", "Laura", "Sarah", "Markus", "Christian", "Nicole",
                     "Petra", "Jürgen", "Sven", "Lisa", "Jens"),
        surnames=("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner",
                  "Becker", "Schulz", "Hoffmann", "Koch", "Richter", "Klein", "Wolf",
                  "Schröder", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger"),
        legal_forms=("GmbH", "GmbH", "GmbH", "AG", "GmbH & Co. KG", "e.K."),
        industries=("Logistik", "Maschinenbau", "Bürotechnik", "Elektrotechnik", "Handel",
                    "Medizintechnik", "Bau", "Möbelwerk", "Druckerei", "Automation",
                    "Haustechnik", "Verpackung"),
        post_code=_numeric_post_code(5), phone=_de_phone,
        mobile=lambda rng: f"+49 {rng.choice(('151', '160', '170', '171', '176'))} "
                           f"{_digits(rng, 8)}",
        vat_no=_vat("DE", 9),
        address_2=("Haus B", "2. OG", "Gebäude 3", "Hinterhaus"),
    ),
    Country(
        "US", "USD", 20,
        cities=(
            City("New York", 10001, 10282, "212", "NY"), City("Chicago", 60601, 60661, "312", "IL"),
            City("Seattle", 98101, 98199, "206", "WA"), City("Atlanta", 30303, 30363, "404", "GA"),
            City("Boston", 2108, 2137, "617", "MA"), City("Denver", 80202, 80239, "303", "CO"),
            City("Austin", 78701, 78759, "512", "TX"),
        ),
        streets=("Main Street", "Oak Avenue", "Maple Drive", "Washington Street", "Park Avenue",
                 "Lake Shore Drive", "Elm Street", "Pine Street", "Commerce Way",
                 "Market Street", "Cedar Lane", "Harbor Boulevard"),
        street_number_first=True,
        first_names=("Michael", "Jennifer", "David", "Jessica", "Christopher", "Ashley",
                     "Matthew", "Amanda", "Joshua", "Sarah", "Daniel", "Emily", "Ryan", "Megan",
                     "Brian", "Rachel", "Kevin", "Lauren"),
        surnames=("Johnson", "Williams", "Miller", "Davis", "Rodriguez", "Martinez",
                  "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Martin", "Lee",
                  "Harris", "Clark", "Lewis", "Young", "Walker", "Allen", "King"),
        legal_forms=("Inc.", "Inc.", "LLC", "LLC", "Corp."),
        industries=("Logistics", "Engineering", "Office Supplies", "Furniture", "Consulting",
                    "Systems", "Trading", "Interiors", "Industries", "Electronics",
                    "Packaging", "Healthcare"),
        post_code=_numeric_post_code(5), phone=_us_phone,
        mobile=lambda rng: f"+1 {rng.choice(('201', '646', '917', '773'))}-555-01"
                           f"{_digits(rng, 2)}",
        vat_no=_no_vat,
        address_2=("Suite 100", "Suite 210", "Suite 350", "Floor 4", "Building C"),
    ),
    Country(
        "GB", "GBP", 15,
        cities=(
            City("London", 0, 0, "20 7946", districts=("EC1A", "EC2M", "WC2N", "SW1A", "SE1",
                                                       "N1", "E14", "W1D")),
            City("Manchester", 0, 0, "161 496", districts=("M1", "M2", "M3", "M4")),
            City("Birmingham", 0, 0, "121 496", districts=("B1", "B2", "B3", "B5")),
            City("Leeds", 0, 0, "113 496", districts=("LS1", "LS2", "LS11")),
            City("Bristol", 0, 0, "117 496", districts=("BS1", "BS2", "BS8")),
            City("Edinburgh", 0, 0, "131 496", districts=("EH1", "EH2", "EH3")),
        ),
        streets=("High Street", "Station Road", "Church Lane", "Victoria Road", "Kings Road",
                 "Market Street", "Mill Lane", "Queen Street", "Park Avenue", "Albert Road"),
        street_number_first=True,
        first_names=("Oliver", "George", "Harry", "Jack", "Charlotte", "Amelia", "Emily",
                     "Sophie", "James", "William", "Thomas", "Jessica", "Hannah", "Daniel",
                     "Rebecca", "Matthew", "Lucy", "Samuel"),
        surnames=("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson",
                  "Davies", "Robinson", "Wright", "Thompson", "Evans", "Walker", "White",
                  "Roberts", "Green", "Hall", "Wood", "Clarke", "Hughes"),
        legal_forms=("Ltd", "Ltd", "Ltd", "PLC", "LLP"),
        industries=("Logistics", "Engineering", "Office Supplies", "Furniture", "Consulting",
                    "Systems", "Trading", "Interiors", "Print", "Electronics", "Packaging"),
        post_code=_uk_post_code, phone=_uk_phone,
        mobile=lambda rng: f"+44 7700 900{_digits(rng, 3)}", vat_no=_vat("GB", 9),
        address_2=("Unit 4", "Floor 2", "Suite 12"),
    ),
    Country(
        "NL", "EUR", 10,
        cities=(
            City("Amsterdam", 1011, 1109, "20"), City("Rotterdam", 3011, 3089, "10"),
            City("Utrecht", 3511, 3585, "30"), City("Eindhoven", 5611, 5658, "40"),
        ),
        streets=("Keizersgracht", "Herengracht", "Stationsplein", "Kerkstraat", "Dorpsstraat",
                 "Industrieweg", "Marktplein", "Coolsingel", "Havenstraat"),
        street_number_first=False,
        first_names=("Jan", "Pieter", "Sander", "Joost", "Daan", "Sanne", "Lotte", "Eva",
                     "Anouk", "Bram", "Thijs", "Femke", "Ruben", "Marieke", "Koen", "Iris"),
        surnames=("de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker",
                  "Janssen", "Visser", "Smit", "Meijer", "de Boer", "Mulder", "de Groot",
                  "Bos", "Vos", "Peters"),
        legal_forms=("B.V.", "B.V.", "B.V.", "N.V."),
        industries=("Logistiek", "Techniek", "Handel", "Installatie", "Advies", "Meubelen",
                    "Verpakkingen", "Bouw"),
        post_code=_nl_post_code, phone=_grouped("+31", (3, 4)),
        mobile=_mobile("+31 6", 4, 4), vat_no=_vat("NL", 9, "B01"),
    ),
    Country(
        "FR", "EUR", 10,
        cities=(
            City("Paris", 75001, 75020, "1"), City("Lyon", 69001, 69009, "4"),
            City("Marseille", 13001, 13016, "4"), City("Toulouse", 31000, 31500, "5"),
            City("Lille", 59000, 59800, "3"),
        ),
        streets=("rue de la République", "avenue Victor Hugo", "boulevard Voltaire",
                 "rue du Commerce", "avenue Jean Jaurès", "rue de la Paix", "quai de la Loire",
                 "rue Nationale"),
        street_number_first=True,
        first_names=("Jean", "Pierre", "Nicolas", "Julien", "Camille", "Marie", "Sophie",
                     "Isabelle", "Thomas", "Antoine", "Élodie", "Céline", "Mathieu", "Nathalie",
                     "Laurent", "Aurélie"),
        surnames=("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit",
                  "Durand", "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel",
                  "Garcia", "Fournier"),
        legal_forms=("SAS", "SAS", "SARL", "SA"),
        industries=("Logistique", "Ingénierie", "Mobilier", "Conseil", "Distribution",
                    "Industrie", "Électronique", "Emballages"),
        post_code=_numeric_post_code(5), phone=_grouped("+33", (2, 2, 2, 2)),
        mobile=_mobile("+33 6", 2, 2, 2, 2), vat_no=_vat("FR", 11),
        address_2=("Bâtiment A", "3e étage", "ZI Nord"),
    ),
    Country(
        "DK", "DKK", 8,
        cities=(
            City("København K", 1050, 1473, "33"), City("Aarhus C", 8000, 8000, "86"),
            City("Odense C", 5000, 5000, "66"), City("Aalborg", 9000, 9000, "98"),
        ),
        streets=("Vesterbrogade", "Nørregade", "Strandvejen", "Østergade", "Amagerbrogade",
                 "Industrivej", "Kongevejen", "Søndergade"),
        street_number_first=False,
        first_names=("Lars", "Mette", "Anders", "Henrik", "Susanne", "Jesper", "Camilla",
                     "Søren", "Lone", "Rasmus", "Line", "Mads", "Pernille", "Frederik", "Ida",
                     "Morten"),
        surnames=("Jensen", "Nielsen", "Hansen", "Pedersen", "Andersen", "Christensen",
                  "Larsen", "Sørensen", "Rasmussen", "Jørgensen", "Petersen", "Madsen",
                  "Kristensen", "Olsen"),
        legal_forms=("A/S", "ApS", "ApS"),
        industries=("Logistik", "Møbler", "Handel", "Maskinfabrik", "Rådgivning", "Byg",
                    "Emballage", "Elektronik"),
        post_code=_numeric_post_code(4), phone=_grouped("+45", (2, 2, 2)),
        mobile=lambda rng: f"+45 {rng.randint(20, 61)} {_digits(rng, 2)} {_digits(rng, 2)} "
                           f"{_digits(rng, 2)}",
        vat_no=_vat("DK", 8),
    ),
    Country(
        "SE", "SEK", 7,
        cities=(
            City("Stockholm", 11120, 11869, "8"), City("Göteborg", 41101, 41775, "31"),
            City("Malmö", 21115, 21774, "40"), City("Uppsala", 75220, 75655, "18"),
        ),
        streets=("Drottninggatan", "Storgatan", "Kungsgatan", "Sveavägen", "Vasagatan",
                 "Industrivägen", "Hamngatan", "Götgatan"),
        street_number_first=False,
        first_names=("Erik", "Lars", "Karl", "Anna", "Maria", "Eva", "Karin", "Johan",
                     "Anders", "Per", "Emma", "Sara", "Oskar", "Elin", "Magnus", "Linnea"),
        surnames=("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson",
                  "Olsson", "Persson", "Svensson", "Gustafsson", "Pettersson", "Jonsson",
                  "Lindberg", "Lindström"),
        legal_forms=("AB",),
        industries=("Logistik", "Möbler", "Handel", "Konsult", "Bygg", "Verkstad",
                    "Elektronik", "Förpackning"),
        post_code=_se_post_code, phone=_grouped("+46", (3, 2, 2)),
        mobile=_mobile("+46 70", 3, 2, 2), vat_no=_vat("SE", 10, "01"),
    ),
    Country(
        "CH", "CHF", 5,
        cities=(
            City("Zürich", 8001, 8099, "44"), City("Basel", 4001, 4059, "61"),
            City("Bern", 3001, 3030, "31"), City("Genève", 1201, 1209, "22"),
            City("Lausanne", 1003, 1018, "21"),
        ),
        streets=("Bahnhofstrasse", "Seestrasse", "Dorfstrasse", "Industriestrasse",
                 "Hauptstrasse", "Rue du Rhône", "Avenue de la Gare", "Marktgasse"),
        street_number_first=False,
        first_names=("Daniel", "Peter", "Thomas", "Martin", "Andrea", "Monika", "Nicole",
                     "Reto", "Urs", "Beat", "Sandra", "Claudia", "Lukas", "Céline", "Nicolas",
                     "Sophie"),
        surnames=("Müller", "Meier", "Schmid", "Keller", "Weber", "Huber", "Schneider",
                  "Meyer", "Steiner", "Fischer", "Gerber", "Brunner", "Baumann", "Frei",
                  "Moser", "Favre"),
        legal_forms=("AG", "AG", "GmbH", "SA"),
        industries=("Logistik", "Präzisionstechnik", "Treuhand", "Handel", "Medtech",
                    "Uhren", "Maschinen", "Informatik"),
        post_code=_numeric_post_code(4), phone=_grouped("+41", (3, 2, 2)),
        mobile=_mobile("+41 79", 3, 2, 2),
        vat_no=lambda rng: f"CHE{_digits(rng, 9)}",
    ),
)

# Brand stems for company names, shared by all countries.
BRANDS: tuple[str, ...] = (
    "Nordwind", "Alpina", "Blauwerk", "Silverline", "Greenfield", "Polaris", "Meridian",
    "Atlas", "Helios", "Orion", "Vega", "Castor", "Lumen", "Solvik", "Kestrel", "Summit",
    "Riverside", "Oakridge", "Northgate", "Harbor", "Beacon", "Crestwood", "Evergreen",
    "Ironbridge", "Westbrook", "Fjord", "Aurora", "Nova", "Zenith", "Apex", "Granite",
    "Cobalt", "Quartz", "Linden", "Elbe", "Rhein", "Isar", "Danubia", "Falkenstein", "Birch",
)

# Added to a company name that is already taken, before resorting to a number.
QUALIFIERS: tuple[str, ...] = (
    "Nord", "Süd", "West", "Ost", "International", "Partners", "Group", "Service", "Solutions",
    "Europe", "Holding", "Direct",
)

JOB_TITLES: tuple[str, ...] = (
    "Purchasing Manager", "CEO", "CFO", "Head of IT", "Office Manager", "Accountant",
    "Sales Director", "Operations Manager", "Buyer", "Project Manager", "Managing Director",
    "Procurement Lead", "Facility Manager", "Logistics Manager",
)

PAYMENT_TERMS: tuple[str, ...] = ("14 DAYS", "30 DAYS", "30 DAYS", "1M(8D)", "CM", "COD")

CREDIT_LIMITS: tuple[int, ...] = (0, 5000, 10000, 10000, 20000, 25000, 50000, 100000)

_TRANSLITERATION = str.maketrans({
    "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "å": "aa", "ø": "oe", "æ": "ae",
    "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "Å": "Aa", "Ø": "Oe", "Æ": "Ae",
})


@lru_cache(maxsize=4096)
def ascii_slug(text: str, separator: str = "-") -> str:
    """Lower-case ASCII letters and digits joined by ``separator``: ``Müller & Söhne`` gives
    ``mueller-soehne``; for e-mail local parts and domain names."""
    folded = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATION))
    plain = folded.encode("ascii", "ignore").decode().lower()
    words = "".join(c if c.isalnum() else " " for c in plain).split()
    return separator.join(words)


def pick_country(rng: random.Random) -> Country:
    """A country drawn by its weight (Germany most often, Switzerland least)."""
    return rng.choices(COUNTRIES, weights=[c.weight for c in COUNTRIES])[0]
