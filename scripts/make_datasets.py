"""Regenerate the built-in task files of `spade_viz/assets/datasets` (stdlib only, deterministic).

    python scripts/make_datasets.py [OUT_FOLDER]

The committed .jsonl files are the artifacts; this script is how they were
made (OUT_FOLDER, default the package's folder, lets a test compare them).
Every fact below was checked by hand; when in doubt an item was left out
(see the comments next to each table).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent.parent / "spade_viz" / "assets" / "datasets"
OUT = PACKAGED  # where `write` puts the files (the command line may name another folder)


def write(task: str, rows: list[dict]) -> None:
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"{task}: duplicate ids"
    for r in rows:
        assert r["prompt"] and r["answer"], r
        assert not r["prompt"][-1].isspace(), f"{task}: prompt ends in whitespace: {r['id']}"
        if "choices" in r:
            assert r["answer"] in r["choices"], r
    path = OUT / f"{task}.jsonl"
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{path.name}: {len(rows)} items")


# ---------------------------------------------------------------------------
# 1. Capitals
# ---------------------------------------------------------------------------

CAPITAL_SHOTS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo")]

# Sovereign states with one well-established capital under a stable English name.
# Left out on purpose: several or disputed capitals (Bolivia, Benin, Burundi,
# Côte d'Ivoire, Eswatini, Israel, Malaysia*, Netherlands, Palestine, South Africa,
# Sri Lanka, Switzerland, Tanzania, Yemen, Sudan, Equatorial Guinea, Indonesia),
# city-states or capitals named like the country (Djibouti, Luxembourg, Monaco,
# San Marino, Singapore, Vatican City, Kuwait, Guatemala, Panama), capitals with
# competing English spellings (Kyiv/Kiev, Ulaanbaatar, Chisinau, Nay Pyi Taw,
# Nuku'alofa, Saint John's, Saint George's), no official capital (Nauru,
# Kiribati), the US state clash (Georgia), recent renames (Kazakhstan), and
# Taiwan/Kosovo/Western Sahara.  (*Kuala Lumpur vs Putrajaya.)
CAPITALS = [
    ("Afghanistan", "Kabul"),
    ("Albania", "Tirana"),
    ("Algeria", "Algiers"),
    ("Andorra", "Andorra la Vella"),
    ("Angola", "Luanda"),
    ("Argentina", "Buenos Aires"),
    ("Armenia", "Yerevan"),
    ("Australia", "Canberra"),
    ("Austria", "Vienna"),
    ("Azerbaijan", "Baku"),
    ("Bahamas", "Nassau"),
    ("Bahrain", "Manama"),
    ("Bangladesh", "Dhaka"),
    ("Barbados", "Bridgetown"),
    ("Belarus", "Minsk"),
    ("Belgium", "Brussels"),
    ("Belize", "Belmopan"),
    ("Bhutan", "Thimphu"),
    ("Bosnia and Herzegovina", "Sarajevo"),
    ("Botswana", "Gaborone"),
    ("Brazil", "Brasília"),
    ("Brunei", "Bandar Seri Begawan"),
    ("Bulgaria", "Sofia"),
    ("Burkina Faso", "Ouagadougou"),
    ("Cambodia", "Phnom Penh"),
    ("Cameroon", "Yaoundé"),
    ("Canada", "Ottawa"),
    ("Cape Verde", "Praia"),
    ("Central African Republic", "Bangui"),
    ("Chad", "N'Djamena"),
    ("Chile", "Santiago"),
    ("China", "Beijing"),
    ("Colombia", "Bogotá"),
    ("Comoros", "Moroni"),
    ("Costa Rica", "San José"),
    ("Croatia", "Zagreb"),
    ("Cuba", "Havana"),
    ("Cyprus", "Nicosia"),
    ("Czech Republic", "Prague"),
    ("Democratic Republic of the Congo", "Kinshasa"),
    ("Denmark", "Copenhagen"),
    ("Dominica", "Roseau"),
    ("Dominican Republic", "Santo Domingo"),
    ("East Timor", "Dili"),
    ("Ecuador", "Quito"),
    ("El Salvador", "San Salvador"),
    ("Eritrea", "Asmara"),
    ("Estonia", "Tallinn"),
    ("Ethiopia", "Addis Ababa"),
    ("Fiji", "Suva"),
    ("Finland", "Helsinki"),
    ("Gabon", "Libreville"),
    ("Gambia", "Banjul"),
    ("Germany", "Berlin"),
    ("Ghana", "Accra"),
    ("Greece", "Athens"),
    ("Guinea", "Conakry"),
    ("Guinea-Bissau", "Bissau"),
    ("Guyana", "Georgetown"),
    ("Haiti", "Port-au-Prince"),
    ("Honduras", "Tegucigalpa"),
    ("Hungary", "Budapest"),
    ("Iceland", "Reykjavik"),
    ("India", "New Delhi"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Ireland", "Dublin"),
    ("Jamaica", "Kingston"),
    ("Jordan", "Amman"),
    ("Kenya", "Nairobi"),
    ("Kyrgyzstan", "Bishkek"),
    ("Laos", "Vientiane"),
    ("Latvia", "Riga"),
    ("Lebanon", "Beirut"),
    ("Lesotho", "Maseru"),
    ("Liberia", "Monrovia"),
    ("Libya", "Tripoli"),
    ("Liechtenstein", "Vaduz"),
    ("Lithuania", "Vilnius"),
    ("Madagascar", "Antananarivo"),
    ("Malawi", "Lilongwe"),
    ("Maldives", "Malé"),
    ("Mali", "Bamako"),
    ("Malta", "Valletta"),
    ("Marshall Islands", "Majuro"),
    ("Mauritania", "Nouakchott"),
    ("Mauritius", "Port Louis"),
    ("Mexico", "Mexico City"),
    ("Micronesia", "Palikir"),
    ("Montenegro", "Podgorica"),
    ("Morocco", "Rabat"),
    ("Mozambique", "Maputo"),
    ("Namibia", "Windhoek"),
    ("Nepal", "Kathmandu"),
    ("New Zealand", "Wellington"),
    ("Nicaragua", "Managua"),
    ("Niger", "Niamey"),
    ("Nigeria", "Abuja"),
    ("North Korea", "Pyongyang"),
    ("North Macedonia", "Skopje"),
    ("Norway", "Oslo"),
    ("Oman", "Muscat"),
    ("Pakistan", "Islamabad"),
    ("Palau", "Ngerulmud"),
    ("Papua New Guinea", "Port Moresby"),
    ("Paraguay", "Asunción"),
    ("Peru", "Lima"),
    ("Philippines", "Manila"),
    ("Poland", "Warsaw"),
    ("Portugal", "Lisbon"),
    ("Qatar", "Doha"),
    ("Republic of the Congo", "Brazzaville"),
    ("Romania", "Bucharest"),
    ("Russia", "Moscow"),
    ("Rwanda", "Kigali"),
    ("Saint Kitts and Nevis", "Basseterre"),
    ("Saint Lucia", "Castries"),
    ("Saint Vincent and the Grenadines", "Kingstown"),
    ("Samoa", "Apia"),
    ("Saudi Arabia", "Riyadh"),
    ("Senegal", "Dakar"),
    ("Serbia", "Belgrade"),
    ("Seychelles", "Victoria"),
    ("Sierra Leone", "Freetown"),
    ("Slovakia", "Bratislava"),
    ("Slovenia", "Ljubljana"),
    ("Solomon Islands", "Honiara"),
    ("Somalia", "Mogadishu"),
    ("South Korea", "Seoul"),
    ("South Sudan", "Juba"),
    ("Spain", "Madrid"),
    ("Suriname", "Paramaribo"),
    ("Sweden", "Stockholm"),
    ("Syria", "Damascus"),
    ("Tajikistan", "Dushanbe"),
    ("Thailand", "Bangkok"),
    ("Togo", "Lomé"),
    ("Trinidad and Tobago", "Port of Spain"),
    ("Tunisia", "Tunis"),
    ("Turkey", "Ankara"),
    ("Turkmenistan", "Ashgabat"),
    ("Tuvalu", "Funafuti"),
    ("Uganda", "Kampala"),
    ("United Arab Emirates", "Abu Dhabi"),
    ("United Kingdom", "London"),
    ("United States", "Washington, D.C."),
    ("Uruguay", "Montevideo"),
    ("Uzbekistan", "Tashkent"),
    ("Vanuatu", "Port Vila"),
    ("Venezuela", "Caracas"),
    ("Vietnam", "Hanoi"),
    ("Zambia", "Lusaka"),
    ("Zimbabwe", "Harare"),
]


def make_capitals() -> None:
    shots = "".join(f"{c}: {cap}\n" for c, cap in CAPITAL_SHOTS)
    shot_countries = {c for c, _ in CAPITAL_SHOTS}
    rows = []
    for country, capital in CAPITALS:
        assert country not in shot_countries
        rows.append({
            "id": f"capitals-{len(rows) + 1:03d}",
            "prompt": f"{shots}{country}:",
            "answer": f" {capital}",
        })
    write("capitals", rows)


# ---------------------------------------------------------------------------
# 2. English -> French
# ---------------------------------------------------------------------------

FR_SHOTS = [("cat", "chat"), ("house", "maison"), ("red", "rouge"), ("three", "trois"),
            ("dog", "chien"), ("water", "eau"), ("book", "livre"), ("green", "vert")]

# Words with one standard French translation. Left out: words whose English is
# ambiguous (spring, plane, key, ...), whose French has common variants
# (pig, brown, purple, bicycle, doctor, year, room, river, spoon, key) or
# that are spelled the same in both languages (lion, table, train, six, orange).
EN_FR = [
    # animals
    ("dog", "chien"), ("fish", "poisson"), ("bird", "oiseau"), ("horse", "cheval"),
    ("cow", "vache"), ("sheep", "mouton"), ("mouse", "souris"), ("rabbit", "lapin"),
    ("bear", "ours"), ("wolf", "loup"), ("fox", "renard"), ("snake", "serpent"),
    ("frog", "grenouille"), ("duck", "canard"), ("bee", "abeille"),
    ("butterfly", "papillon"), ("spider", "araignée"), ("ant", "fourmi"),
    ("elephant", "éléphant"), ("monkey", "singe"),
    # colours
    ("blue", "bleu"), ("green", "vert"), ("yellow", "jaune"), ("black", "noir"),
    ("white", "blanc"), ("grey", "gris"), ("pink", "rose"),
    # numbers
    ("two", "deux"), ("four", "quatre"), ("five", "cinq"), ("seven", "sept"),
    ("eight", "huit"), ("nine", "neuf"), ("ten", "dix"), ("eleven", "onze"),
    ("twelve", "douze"), ("twenty", "vingt"), ("hundred", "cent"), ("thousand", "mille"),
    # days and months
    ("Monday", "lundi"), ("Tuesday", "mardi"), ("Wednesday", "mercredi"),
    ("Thursday", "jeudi"), ("Friday", "vendredi"), ("Saturday", "samedi"),
    ("Sunday", "dimanche"), ("January", "janvier"), ("February", "février"),
    ("March", "mars"), ("April", "avril"), ("May", "mai"), ("June", "juin"),
    ("July", "juillet"), ("August", "août"), ("September", "septembre"),
    ("October", "octobre"), ("November", "novembre"), ("December", "décembre"),
    # body
    ("head", "tête"), ("hand", "main"), ("foot", "pied"), ("mouth", "bouche"),
    ("nose", "nez"), ("ear", "oreille"), ("arm", "bras"), ("leg", "jambe"),
    ("tooth", "dent"), ("heart", "cœur"), ("eye", "œil"),
    # people
    ("mother", "mère"), ("father", "père"), ("brother", "frère"), ("sister", "sœur"),
    ("son", "fils"), ("daughter", "fille"), ("boy", "garçon"), ("man", "homme"),
    ("woman", "femme"), ("child", "enfant"), ("friend", "ami"), ("king", "roi"),
    ("queen", "reine"),
    # nature
    ("water", "eau"), ("tree", "arbre"), ("sun", "soleil"), ("moon", "lune"),
    ("sea", "mer"), ("mountain", "montagne"), ("flower", "fleur"), ("rain", "pluie"),
    ("snow", "neige"), ("wind", "vent"), ("fire", "feu"), ("sky", "ciel"),
    ("star", "étoile"), ("cloud", "nuage"), ("stone", "pierre"), ("sand", "sable"),
    ("island", "île"), ("forest", "forêt"), ("grass", "herbe"), ("leaf", "feuille"),
    # things and places
    ("book", "livre"), ("car", "voiture"), ("door", "porte"), ("window", "fenêtre"),
    ("chair", "chaise"), ("bed", "lit"), ("pen", "stylo"), ("knife", "couteau"),
    ("fork", "fourchette"), ("cup", "tasse"), ("bottle", "bouteille"), ("box", "boîte"),
    ("shoe", "chaussure"), ("hat", "chapeau"), ("shirt", "chemise"), ("dress", "robe"),
    ("boat", "bateau"), ("airplane", "avion"), ("road", "route"), ("street", "rue"),
    ("city", "ville"), ("school", "école"), ("church", "église"), ("money", "argent"),
    ("word", "mot"), ("name", "nom"), ("song", "chanson"), ("garden", "jardin"),
    ("kitchen", "cuisine"), ("wall", "mur"), ("roof", "toit"), ("bridge", "pont"),
    # food
    ("bread", "pain"), ("apple", "pomme"), ("cheese", "fromage"), ("milk", "lait"),
    ("wine", "vin"), ("egg", "œuf"), ("butter", "beurre"), ("sugar", "sucre"),
    ("salt", "sel"), ("meat", "viande"), ("rice", "riz"), ("cake", "gâteau"),
    ("tomato", "tomate"), ("carrot", "carotte"), ("lemon", "citron"),
    ("strawberry", "fraise"), ("cherry", "cerise"), ("pear", "poire"),
    ("banana", "banane"), ("coffee", "café"), ("tea", "thé"), ("beer", "bière"),
    ("honey", "miel"), ("chocolate", "chocolat"),
    # time and seasons
    ("day", "jour"), ("night", "nuit"), ("week", "semaine"), ("month", "mois"),
    ("morning", "matin"), ("evening", "soir"), ("hour", "heure"),
    ("summer", "été"), ("winter", "hiver"), ("autumn", "automne"),
]


def make_translation() -> None:
    shots = "".join(f"English: {en}\nFrench: {fr}\n" for en, fr in FR_SHOTS)
    shot_words = {en for en, _ in FR_SHOTS}
    rows = []
    for en, fr in EN_FR:
        if en in shot_words:
            continue
        rows.append({
            "id": f"en_fr-{len(rows) + 1:03d}",
            "prompt": f"{shots}English: {en}\nFrench:",
            "answer": f" {fr}",
        })
    write("translation_en_fr", rows)


# ---------------------------------------------------------------------------
# 3. Antonyms
# ---------------------------------------------------------------------------

ANT_SHOTS = [("good", "bad"), ("tall", "short"), ("happy", "sad"), ("clean", "dirty")]

# Pairs whose antonym is the dominant one in both directions; words with two
# common antonyms are used in one direction only or not at all
# (old: new/young, light: dark/heavy, right: left/wrong, hard: soft/easy,
# open: closed/close/shut, short: long/tall, small: big/large, ...).
ANTONYM_PAIRS_BOTH = [
    ("hot", "cold"), ("fast", "slow"), ("up", "down"), ("in", "out"), ("on", "off"),
    ("yes", "no"), ("true", "false"), ("wet", "dry"), ("full", "empty"),
    ("wide", "narrow"), ("deep", "shallow"), ("early", "late"), ("high", "low"),
    ("rich", "poor"), ("strong", "weak"), ("above", "below"), ("before", "after"),
    ("inside", "outside"), ("first", "last"), ("north", "south"), ("east", "west"),
    ("top", "bottom"), ("always", "never"), ("everything", "nothing"),
    ("love", "hate"), ("war", "peace"), ("day", "night"), ("black", "white"),
    ("alive", "dead"), ("friend", "enemy"), ("victory", "defeat"),
    ("success", "failure"), ("positive", "negative"), ("plus", "minus"),
    ("import", "export"), ("input", "output"), ("cheap", "expensive"),
    ("male", "female"), ("husband", "wife"), ("boy", "girl"), ("man", "woman"),
    ("king", "queen"), ("buy", "sell"), ("borrow", "lend"), ("remember", "forget"),
    ("sink", "float"), ("inhale", "exhale"), ("include", "exclude"),
    ("rough", "smooth"), ("loose", "tight"), ("odd", "even"), ("sunrise", "sunset"),
    ("asleep", "awake"), ("floor", "ceiling"), ("majority", "minority"),
    ("superior", "inferior"), ("internal", "external"), ("interior", "exterior"),
    ("horizontal", "vertical"), ("push", "pull"), ("maximum", "minimum"),
    ("increase", "decrease"), ("question", "answer"), ("optimist", "pessimist"),
    ("entrance", "exit"), ("under", "over"), ("heaven", "hell"),
]
ANTONYM_PAIRS_ONE_WAY = [
    ("big", "small"), ("large", "small"), ("long", "short"), ("thick", "thin"),
    ("dark", "light"), ("heavy", "light"), ("soft", "hard"), ("difficult", "easy"),
    ("young", "old"), ("new", "old"), ("win", "lose"), ("loud", "quiet"),
    ("noisy", "quiet"), ("dirty", "clean"), ("front", "back"), ("left", "right"),
    ("absent", "present"), ("life", "death"), ("birth", "death"),
    ("possible", "impossible"), ("visible", "invisible"), ("legal", "illegal"),
    ("honest", "dishonest"), ("agree", "disagree"), ("appear", "disappear"),
    ("lock", "unlock"), ("pack", "unpack"), ("tie", "untie"), ("fair", "unfair"),
    ("known", "unknown"), ("usual", "unusual"), ("lucky", "unlucky"),
    ("certain", "uncertain"), ("complete", "incomplete"), ("patient", "impatient"),
    ("regular", "irregular"), ("mortal", "immortal"), ("logical", "illogical"),
    ("obey", "disobey"), ("expected", "unexpected"), ("necessary", "unnecessary"),
]


def antonym_items() -> list[tuple[str, str]]:
    shot_words = {w for pair in ANT_SHOTS for w in pair}
    items: list[tuple[str, str]] = []
    for a, b in ANTONYM_PAIRS_BOTH:
        items += [(a, b), (b, a)]
    items += ANTONYM_PAIRS_ONE_WAY
    out, seen = [], set()
    for a, b in items:
        if a in seen or a in shot_words or b in shot_words:
            continue
        seen.add(a)
        out.append((a, b))
    return out


def make_antonyms() -> None:
    shots = "".join(f"{a} -> {b}\n" for a, b in ANT_SHOTS)
    rows = []
    for a, b in antonym_items():
        rows.append({
            "id": f"antonyms-{len(rows) + 1:03d}",
            "prompt": f"{shots}{a} ->",
            "answer": f" {b}",
        })
    write("antonyms", rows)


# ---------------------------------------------------------------------------
# 4. Next item in a sequence
# ---------------------------------------------------------------------------

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December"]
NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                "seventeen", "eighteen", "nineteen", "twenty"]
LOWER = "abcdefghijklmnopqrstuvwxyz"

# One complete sequence of each kind as the shots; items whose first three
# elements equal a shot's are left out. Digit sequences are written without
# spaces ("5,6,7,8"): tokenizers that split digits (SmolLM2, Llama 3, ...) put
# the space in a token of its own, which would make " 8" start with a bare space.
NEXT_SHOTS = [
    "k, l, m, n",
    "June, July, August, September",
    "Tuesday, Wednesday, Thursday, Friday",
    "5,6,7,8",
]


def next_items() -> list[tuple[str, list[str], str, str]]:
    """(kind, first three elements, separator, answer-with-separator-space)."""
    out: list[tuple[str, list[str], str, str]] = []
    for i in range(len(LOWER) - 3):
        out.append(("lower", list(LOWER[i:i + 3]), ", ", " " + LOWER[i + 3]))
    for i in range(len(LOWER) - 3):
        out.append(("upper", list(LOWER[i:i + 3].upper()), ", ", " " + LOWER[i + 3].upper()))
    for i in range(7):
        seq = [WEEKDAYS[(i + k) % 7] for k in range(4)]
        out.append(("weekday", seq[:3], ", ", " " + seq[3]))
    for i in range(12):
        seq = [MONTHS[(i + k) % 12] for k in range(4)]
        out.append(("month", seq[:3], ", ", " " + seq[3]))
    for i in range(len(NUMBER_WORDS) - 3):
        out.append(("number_word", NUMBER_WORDS[i:i + 3], ", ", " " + NUMBER_WORDS[i + 3]))
    for start in range(1, 21):
        seq = [str(start + k) for k in range(4)]
        out.append(("count_1", seq[:3], ",", seq[3]))
    for step, starts in ((2, range(2, 21, 2)), (5, range(5, 51, 5)), (10, range(10, 71, 10))):
        for start in starts:
            seq = [str(start + step * k) for k in range(4)]
            out.append((f"count_{step}", seq[:3], ",", seq[3]))
    shot_prefixes = {tuple(s.replace(" ", "").split(",")[:3]) for s in NEXT_SHOTS}
    return [it for it in out if tuple(it[1]) not in shot_prefixes]


def make_next_item() -> None:
    shots = "".join(s + "\n" for s in NEXT_SHOTS)
    rows = []
    for kind, first, sep, answer in next_items():
        prompt = shots + sep.join(first) + sep.rstrip()
        rows.append({
            "id": f"next-{kind}-{len(rows) + 1:03d}",
            "prompt": prompt,
            "answer": answer,
        })
    write("next_item", rows)


# ---------------------------------------------------------------------------
# 5. Element symbols -> names
# ---------------------------------------------------------------------------

ELEMENT_SHOTS = [("He", "Helium"), ("Na", "Sodium"), ("Fe", "Iron"), ("Au", "Gold")]

# IUPAC names. Left out: Al, S, Cs, whose English names have two spellings
# (aluminium/aluminum, sulfur/sulphur, caesium/cesium) that start with
# different tokens in common tokenizers.
ELEMENTS = """
H Hydrogen; He Helium; Li Lithium; Be Beryllium; B Boron; C Carbon; N Nitrogen;
O Oxygen; F Fluorine; Ne Neon; Na Sodium; Mg Magnesium; Al Aluminium; Si Silicon;
P Phosphorus; S Sulfur; Cl Chlorine; Ar Argon; K Potassium; Ca Calcium;
Sc Scandium; Ti Titanium; V Vanadium; Cr Chromium; Mn Manganese; Fe Iron;
Co Cobalt; Ni Nickel; Cu Copper; Zn Zinc; Ga Gallium; Ge Germanium; As Arsenic;
Se Selenium; Br Bromine; Kr Krypton; Rb Rubidium; Sr Strontium; Y Yttrium;
Zr Zirconium; Nb Niobium; Mo Molybdenum; Tc Technetium; Ru Ruthenium;
Rh Rhodium; Pd Palladium; Ag Silver; Cd Cadmium; In Indium; Sn Tin;
Sb Antimony; Te Tellurium; I Iodine; Xe Xenon; Cs Caesium; Ba Barium;
La Lanthanum; Ce Cerium; Pr Praseodymium; Nd Neodymium; Pm Promethium;
Sm Samarium; Eu Europium; Gd Gadolinium; Tb Terbium; Dy Dysprosium;
Ho Holmium; Er Erbium; Tm Thulium; Yb Ytterbium; Lu Lutetium; Hf Hafnium;
Ta Tantalum; W Tungsten; Re Rhenium; Os Osmium; Ir Iridium; Pt Platinum;
Au Gold; Hg Mercury; Tl Thallium; Pb Lead; Bi Bismuth; Po Polonium;
At Astatine; Rn Radon; Fr Francium; Ra Radium; Ac Actinium; Th Thorium;
Pa Protactinium; U Uranium; Np Neptunium; Pu Plutonium; Am Americium;
Cm Curium; Bk Berkelium; Cf Californium; Es Einsteinium; Fm Fermium;
Md Mendelevium; No Nobelium; Lr Lawrencium; Rf Rutherfordium; Db Dubnium;
Sg Seaborgium; Bh Bohrium; Hs Hassium; Mt Meitnerium; Ds Darmstadtium;
Rg Roentgenium; Cn Copernicium; Nh Nihonium; Fl Flerovium; Mc Moscovium;
Lv Livermorium; Ts Tennessine; Og Oganesson
"""
ELEMENTS_LEFT_OUT = {"Al", "S", "Cs"}


def elements() -> list[tuple[int, str, str]]:
    out = []
    for z, entry in enumerate(ELEMENTS.replace("\n", " ").split(";"), start=1):
        sym, name = entry.split()
        out.append((z, sym, name))
    assert len(out) == 118 and out[-1] == (118, "Og", "Oganesson")
    assert out[25] == (26, "Fe", "Iron") and out[78] == (79, "Au", "Gold")
    return out


def make_elements() -> None:
    shots = "".join(f"{s}: {n}\n" for s, n in ELEMENT_SHOTS)
    shot_syms = {s for s, _ in ELEMENT_SHOTS}
    rows = []
    for z, sym, name in elements():
        if sym in shot_syms or sym in ELEMENTS_LEFT_OUT:
            continue
        rows.append({"id": f"element-{z:03d}", "prompt": f"{shots}{sym}:", "answer": f" {name}"})
    write("element_names", rows)


# ---------------------------------------------------------------------------
# 6. Multiple choice (answer with a letter)
# ---------------------------------------------------------------------------

LETTERS = ["A", "B", "C", "D"]

# (question, options in display order, gold letter)
MC_SHOTS = [
    ("Which animal barks?", ["Cat", "Dog", "Fish", "Bird"], "B"),
    ("How many legs does a spider have?", ["Eight", "Four", "Six", "Two"], "A"),
    ("What color is the sky on a clear day?", ["Green", "Red", "Yellow", "Blue"], "D"),
]

# (question, correct option, three wrong options). The correct option is
# placed at A, B, C, D in turn so the gold letters are balanced.
MC_ITEMS = [
    ("Which animal says \"moo\"?", "Cow", ["Dog", "Cat", "Duck"]),
    ("Which animal has a trunk?", "Elephant", ["Horse", "Rabbit", "Snake"]),
    ("What do bees make?", "Honey", ["Milk", "Silk", "Wool"]),
    ("How many days are in a week?", "Seven", ["Five", "Ten", "Twelve"]),
    ("How many months are in a year?", "Twelve", ["Seven", "Ten", "Twenty"]),
    ("What is the opposite of hot?", "Cold", ["Warm", "Big", "Fast"]),
    ("Which planet do we live on?", "Earth", ["Mars", "Jupiter", "Venus"]),
    ("What is frozen water called?", "Ice", ["Steam", "Sand", "Glass"]),
    ("Which fruit is long, curved and yellow?", "Banana", ["Apple", "Grape", "Cherry"]),
    ("What do people usually use to write on paper?", "Pen", ["Spoon", "Fork", "Plate"]),
    ("Which of these animals can fly?", "Eagle", ["Dog", "Cow", "Horse"]),
    ("What is the capital of France?", "Paris", ["London", "Berlin", "Madrid"]),
    ("What is the capital of Japan?", "Tokyo", ["Beijing", "Seoul", "Bangkok"]),
    ("How many legs does a dog have?", "Four", ["Two", "Six", "Eight"]),
    ("What color is grass?", "Green", ["Blue", "Red", "Purple"]),
    ("What color is fresh snow?", "White", ["Black", "Green", "Orange"]),
    ("Which season comes after winter?", "Spring", ["Summer", "Autumn", "Night"]),
    ("Which day comes after Monday?", "Tuesday", ["Sunday", "Friday", "Thursday"]),
    ("What is 2 + 2?", "4", ["3", "5", "6"]),
    ("What is 5 + 3?", "8", ["6", "7", "9"]),
    ("What is 10 - 4?", "6", ["4", "5", "7"]),
    ("What is 3 times 3?", "9", ["6", "8", "12"]),
    ("Which of these is a fruit?", "Apple", ["Carrot", "Potato", "Onion"]),
    ("Which of these is a vegetable?", "Carrot", ["Apple", "Banana", "Cherry"]),
    ("Which of these animals lives in water?", "Fish", ["Lion", "Horse", "Camel"]),
    ("What is the largest ocean on Earth?", "Pacific Ocean", ["Atlantic Ocean", "Indian Ocean", "Arctic Ocean"]),
    ("At what temperature in degrees Celsius does water boil at sea level?", "100", ["0", "50", "200"]),
    ("At what temperature in degrees Celsius does water freeze?", "0", ["100", "50", "20"]),
    ("Which is the largest planet in the Solar System?", "Jupiter", ["Mercury", "Mars", "Earth"]),
    ("Which planet is closest to the Sun?", "Mercury", ["Jupiter", "Saturn", "Neptune"]),
    ("Who wrote \"Romeo and Juliet\"?", "William Shakespeare", ["Charles Dickens", "Mark Twain", "Jane Austen"]),
    ("What is the chemical formula for water?", "H2O", ["CO2", "O2", "NaCl"]),
    ("Which animal is called the king of the jungle?", "Lion", ["Mouse", "Rabbit", "Sheep"]),
    ("Which instrument has black and white keys?", "Piano", ["Drum", "Trumpet", "Violin"]),
    ("What shape has three sides?", "Triangle", ["Square", "Circle", "Rectangle"]),
    ("How many sides does a hexagon have?", "Six", ["Five", "Seven", "Eight"]),
    ("What is the main language spoken in Brazil?", "Portuguese", ["Spanish", "French", "Italian"]),
    ("What is the main language spoken in Mexico?", "Spanish", ["Portuguese", "French", "German"]),
    ("In which country do kangaroos live in the wild?", "Australia", ["Canada", "Norway", "Brazil"]),
    ("What is the tallest animal?", "Giraffe", ["Elephant", "Horse", "Dog"]),
    ("Which organ pumps blood through the body?", "Heart", ["Lung", "Stomach", "Brain"]),
    ("Which organs do we use to breathe?", "Lungs", ["Heart", "Liver", "Kidneys"]),
    ("What is a baby cat called?", "Kitten", ["Puppy", "Calf", "Foal"]),
    ("What is a baby dog called?", "Puppy", ["Kitten", "Lamb", "Chick"]),
    ("Which metal is liquid at room temperature?", "Mercury", ["Iron", "Copper", "Gold"]),
    ("How many hours are in a day?", "24", ["12", "48", "60"]),
    ("How many minutes are in an hour?", "60", ["30", "100", "24"]),
    ("How many seconds are in a minute?", "60", ["100", "30", "10"]),
    ("What color is a ripe banana?", "Yellow", ["Blue", "Purple", "Pink"]),
    ("What is the opposite of up?", "Down", ["Left", "Over", "Near"]),
    ("Which animal has black and white stripes?", "Zebra", ["Lion", "Bear", "Camel"]),
    ("What is the largest animal on Earth?", "Blue whale", ["Elephant", "Giraffe", "Horse"]),
    ("Which is the fastest land animal?", "Cheetah", ["Turtle", "Cow", "Sloth"]),
    ("What do we call a person who flies a plane?", "Pilot", ["Chef", "Farmer", "Dentist"]),
    ("Who treats sick people in a hospital?", "Doctor", ["Baker", "Pilot", "Plumber"]),
    ("Which month comes after June?", "July", ["May", "August", "March"]),
    ("Which month has the fewest days?", "February", ["January", "March", "July"]),
    ("How many days are in a leap year?", "366", ["365", "364", "360"]),
    ("What is the capital of Italy?", "Rome", ["Milan", "Venice", "Naples"]),
    ("What is the capital of Spain?", "Madrid", ["Barcelona", "Seville", "Valencia"]),
    ("What is the capital of Germany?", "Berlin", ["Munich", "Hamburg", "Frankfurt"]),
    ("What is the capital of the United Kingdom?", "London", ["Manchester", "Liverpool", "Birmingham"]),
    ("What is the capital of Canada?", "Ottawa", ["Toronto", "Vancouver", "Montreal"]),
    ("What is the capital of Australia?", "Canberra", ["Sydney", "Melbourne", "Perth"]),
    ("What is the capital of China?", "Beijing", ["Shanghai", "Hong Kong", "Guangzhou"]),
    ("What is the capital of Egypt?", "Cairo", ["Alexandria", "Luxor", "Giza"]),
    ("On which continent is Brazil?", "South America", ["Europe", "Africa", "Asia"]),
    ("Which river flows through Egypt?", "Nile", ["Thames", "Seine", "Danube"]),
    ("Which gas do humans need to breathe to stay alive?", "Oxygen", ["Helium", "Neon", "Argon"]),
    ("What is the hardest natural substance?", "Diamond", ["Gold", "Iron", "Chalk"]),
    ("What is a house made of blocks of snow called?", "Igloo", ["Tent", "Castle", "Cabin"]),
    ("How many players does a soccer team have on the field?", "Eleven", ["Five", "Seven", "Nine"]),
    ("In which sport do players hit a shuttlecock?", "Badminton", ["Tennis", "Golf", "Basketball"]),
    ("Which animal gives us wool?", "Sheep", ["Pig", "Chicken", "Fish"]),
    ("What do hens lay?", "Eggs", ["Milk", "Honey", "Wool"]),
    ("Which sense do we use our ears for?", "Hearing", ["Sight", "Smell", "Taste"]),
    ("Which sense do we use our eyes for?", "Sight", ["Hearing", "Smell", "Touch"]),
    ("What is the opposite of day?", "Night", ["Morning", "Noon", "Week"]),
    ("Which of these animals is a mammal?", "Dolphin", ["Shark", "Trout", "Octopus"]),
    ("Which of these animals is a reptile?", "Snake", ["Frog", "Dog", "Eagle"]),
    ("What is the largest country by area?", "Russia", ["France", "Japan", "Mexico"]),
    ("Which star is at the center of our Solar System?", "The Sun", ["The Moon", "Mars", "Polaris"]),
    ("What is the name of the Earth's natural satellite?", "The Moon", ["The Sun", "Mars", "Venus"]),
    ("Which color do you get by mixing blue and yellow paint?", "Green", ["Red", "Orange", "Pink"]),
    ("Which color do you get by mixing red and white paint?", "Pink", ["Blue", "Green", "Black"]),
    ("How many wheels does a bicycle have?", "Two", ["Three", "Four", "Six"]),
    ("How many wheels does a tricycle have?", "Three", ["Two", "Four", "Five"]),
    ("Which of these vehicles runs on rails?", "Train", ["Boat", "Bicycle", "Airplane"]),
    ("Which animal carries its shell on its back?", "Snail", ["Dog", "Horse", "Cat"]),
    ("What do giant pandas mainly eat?", "Bamboo", ["Fish", "Meat", "Cheese"]),
    ("Which animal carries its baby in a pouch?", "Kangaroo", ["Elephant", "Tiger", "Penguin"]),
    ("Which is the largest bird?", "Ostrich", ["Sparrow", "Pigeon", "Robin"]),
    ("How many legs does an insect have?", "Six", ["Four", "Eight", "Ten"]),
    ("Which is the coldest continent?", "Antarctica", ["Africa", "Australia", "South America"]),
    ("What is the main ingredient of guacamole?", "Avocado", ["Tomato", "Potato", "Banana"]),
    ("Which body part do we use to smell?", "Nose", ["Ears", "Elbow", "Knee"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Earth", "Neptune"]),
    ("What is the capital of the United States?", "Washington, D.C.", ["New York", "Los Angeles", "Chicago"]),
    ("In which country are the pyramids of Giza?", "Egypt", ["Mexico", "India", "Peru"]),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ["Pablo Picasso", "Vincent van Gogh", "Claude Monet"]),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong",
     ["Buzz Aldrin", "Yuri Gagarin", "Albert Einstein"]),
    ("What is the currency of Japan?", "Yen", ["Dollar", "Euro", "Peso"]),
    ("How many strings does a violin have?", "Four", ["Six", "Two", "Twelve"]),
    ("What is the opposite of open?", "Closed", ["Empty", "Tall", "Quick"]),
    ("Which tool do we use to cut paper?", "Scissors", ["Hammer", "Spoon", "Brush"]),
    ("What do people wear on their feet?", "Shoes", ["Hats", "Gloves", "Scarves"]),
    ("Which season is usually the hottest?", "Summer", ["Winter", "Autumn", "Spring"]),
    ("What shape is a ball?", "Sphere", ["Cube", "Pyramid", "Cone"]),
    ("How many eyes do people have?", "Two", ["One", "Three", "Four"]),
    ("Which animal is known for hopping and croaking?", "Frog", ["Cow", "Owl", "Goat"]),
    ("Which of these is used to tell the time?", "Clock", ["Chair", "Pillow", "Cup"]),
    ("What do fish use to breathe underwater?", "Gills", ["Lungs", "Wings", "Feathers"]),
]


def mc_block(question: str, options: list[str], gold: str | None) -> str:
    lines = [f"Question: {question}"]
    lines += [f"{L}. {o}" for L, o in zip(LETTERS, options)]
    lines.append("Answer:" + (f" {gold}" if gold else ""))
    return "\n".join(lines)


def make_multiple_choice() -> None:
    shot_qs = {q for q, _, _ in MC_SHOTS}
    shots = "".join(mc_block(q, opts, g) + "\n\n" for q, opts, g in MC_SHOTS)
    rows = []
    for i, (q, correct, wrong) in enumerate(MC_ITEMS):
        assert q not in shot_qs and len(wrong) == 3 and correct not in wrong
        pos = i % 4
        options = wrong[:pos] + [correct] + wrong[pos:]
        gold = LETTERS[pos]
        rows.append({
            "id": f"mc-{len(rows) + 1:03d}",
            "prompt": shots + mc_block(q, options, None),
            "answer": f" {gold}",
            "choices": [f" {L}" for L in LETTERS],
        })
    write("multiple_choice", rows)


# ---------------------------------------------------------------------------
# 7. Yes / no
# ---------------------------------------------------------------------------

# Each item states a fact and asks about it, so the answer is true by
# construction ("Anna lives in Paris. Does Anna live in Rome?" -> " No").
# World-knowledge questions ("Is Berlin the capital of Germany?") and the
# "Question: ...\nAnswer:" layout were tried first: SmolLM2-135M answered
# " No" to all of them (yes/no logit gap uncorrelated with the truth).
YN_NAMES = ["Anna", "Tom", "Lisa", "Mark", "Sara", "Paul", "Emma", "John", "Kate",
            "Mike", "Nina", "Omar", "Lucy", "Jack", "Maria", "David", "Alice", "Peter"]
YN_TEMPLATES = [
    # (statement, question, values)
    ("{n} lives in {a}.", "Does {n} live in {q}?",
     ["Paris", "Rome", "London", "Berlin", "Madrid", "Tokyo", "Cairo", "Vienna", "Oslo", "Lima"]),
    ("{n} has a {a} car.", "Is {n}'s car {q}?",
     ["red", "blue", "green", "yellow", "black", "white", "grey"]),
    ("{n} has a {a}.", "Does {n} have a {q}?",
     ["dog", "cat", "fish", "bird", "rabbit", "horse", "goat", "parrot"]),
    ("{n} plays the {a}.", "Does {n} play the {q}?",
     ["piano", "guitar", "violin", "drums", "flute", "trumpet", "cello"]),
    ("{n} works as a {a}.", "Is {n} a {q}?",
     ["doctor", "teacher", "pilot", "baker", "farmer", "nurse", "lawyer", "painter", "dentist"]),
    ("{n} was born in {a}.", "Was {n} born in {q}?", MONTHS),
    ("{n} drinks {a} every morning.", "Does {n} drink {q} every morning?",
     ["tea", "coffee", "milk", "juice", "water"]),
    ("{n}'s house is {a}.", "Is {n}'s house {q}?",
     ["red", "blue", "green", "yellow", "white", "grey", "pink"]),
]
YN_PER_TEMPLATE = 16  # 8 yes + 8 no each
YN_SHOTS = [
    ("Ben lives in Dublin.", "Does Ben live in Dublin?", "Yes"),
    ("Rosa has a green car.", "Is Rosa's car blue?", "No"),
    ("Sam has a cat.", "Does Sam have a cat?", "Yes"),
    ("Leo plays the harp.", "Does Leo play the organ?", "No"),
    ("Eva works as a chef.", "Is Eva a chef?", "Yes"),
    ("Ivan was born in May.", "Was Ivan born in July?", "No"),
]


def yes_no_items() -> list[tuple[str, str]]:
    rng = random.Random(7)
    items: list[tuple[str, str]] = []
    seen: set[str] = set()
    for stmt, quest, values in YN_TEMPLATES:
        made = 0
        while made < YN_PER_TEMPLATE:
            assert len(seen) < 10_000
            n = rng.choice(YN_NAMES)
            a = rng.choice(values)
            yes = made % 2 == 0
            q = a if yes else rng.choice([v for v in values if v != a])
            text = stmt.format(n=n, a=a) + " " + quest.format(n=n, q=q)
            if text in seen:
                continue
            seen.add(text)
            items.append((text, "Yes" if yes else "No"))
            made += 1
    shot_texts = {f"{s} {q}" for s, q, _ in YN_SHOTS}
    assert not shot_texts & seen
    assert sum(a == "Yes" for _, a in items) * 2 == len(items)
    rng.shuffle(items)
    return items


def make_yes_no() -> None:
    shots = "".join(f"{s} {q} {a}\n" for s, q, a in YN_SHOTS)
    rows = []
    for text, a in yes_no_items():
        rows.append({
            "id": f"yn-{len(rows) + 1:03d}",
            "prompt": f"{shots}{text}",
            "answer": f" {a}",
            "choices": [" Yes", " No"],
        })
    write("yes_no", rows)


# ---------------------------------------------------------------------------
# 8. Multiple choice, cloze style (answer with the option's text)
# ---------------------------------------------------------------------------

# The same questions as multiple_choice, but the model answers with the option
# itself (options not shown, as in "cloze" evaluations) and is scored among the
# four options' first tokens. Items whose options are numbers or share a first
# word are left out (their first tokens would collide).
CLOZE_SHOTS = [("Which animal barks?", "Dog"),
               ("How many legs does a spider have?", "Eight"),
               ("What color is the sky on a clear day?", "Blue")]


def cloze_items() -> list[tuple[str, str, list[str]]]:
    out = []
    for i, (q, correct, wrong) in enumerate(MC_ITEMS):
        pos = i % 4
        options = wrong[:pos] + [correct] + wrong[pos:]
        firsts = [o.split()[0] for o in options]
        if len(set(firsts)) < 4 or any(o[0].isdigit() for o in options):
            continue
        out.append((q, correct, options))
    return out


def make_multiple_choice_cloze() -> None:
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in CLOZE_SHOTS)
    rows = []
    for q, correct, options in cloze_items():
        rows.append({
            "id": f"mcc-{len(rows) + 1:03d}",
            "prompt": f"{shots}Question: {q}\nAnswer:",
            "answer": f" {correct}",
            "choices": [f" {o}" for o in options],
        })
    write("multiple_choice_cloze", rows)


def main(out: Path = PACKAGED) -> None:
    global OUT
    OUT = out
    out.mkdir(parents=True, exist_ok=True)
    make_capitals()
    make_translation()
    make_antonyms()
    make_next_item()
    make_elements()
    make_multiple_choice()
    make_yes_no()
    make_multiple_choice_cloze()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGED)
