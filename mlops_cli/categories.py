"""The 27 product-type codes (``prdtypecode``) of the Rakuten France catalogue.

Rakuten never published names for the codes; the names below are the community
guesses commonly used in public work on the challenge. ``CLASS_COUNTS`` are the
exact label counts of the real ``Y_train_CVw08PX.csv`` (84,916 rows), used as
class priors by the synthetic generator and as a reference by reports.
"""

from __future__ import annotations

CLASS_COUNTS: dict[int, int] = {
    10: 3116,
    40: 2508,
    50: 1681,
    60: 832,
    1140: 2671,
    1160: 3953,
    1180: 764,
    1280: 4870,
    1281: 2070,
    1300: 5045,
    1301: 807,
    1302: 2491,
    1320: 3241,
    1560: 5073,
    1920: 4303,
    1940: 803,
    2060: 4993,
    2220: 824,
    2280: 4760,
    2403: 4774,
    2462: 1421,
    2522: 4989,
    2582: 2589,
    2583: 10209,
    2585: 2496,
    2705: 2761,
    2905: 872,
}

CATEGORY_NAMES: dict[int, str] = {
    10: "Books",
    40: "Video games",
    50: "Gaming accessories",
    60: "Consoles",
    1140: "Figures",
    1160: "Trading cards",
    1180: "Miniature games",
    1280: "Toys",
    1281: "Board games",
    1300: "Model making",
    1301: "Baby socks & bar games",
    1302: "Outdoor games",
    1320: "Childcare",
    1560: "Furniture",
    1920: "Household linen",
    1940: "Food",
    2060: "Home decoration",
    2220: "Pet supplies",
    2280: "Magazines",
    2403: "Book lots",
    2462: "Game lots",
    2522: "Stationery",
    2582: "Garden furniture",
    2583: "Pool",
    2585: "Garden tools",
    2705: "New books",
    2905: "PC games",
}

CATEGORY_NAMES_FR: dict[int, str] = {
    10: "Livres occasion",
    40: "Jeux vidéo",
    50: "Accessoires gaming",
    60: "Consoles",
    1140: "Figurines",
    1160: "Cartes de jeu",
    1180: "Jeux de rôle & figurines",
    1280: "Jouets enfants",
    1281: "Jeux de société",
    1300: "Modélisme",
    1301: "Chaussettes bébé, jeux de bar",
    1302: "Jeux d'extérieur",
    1320: "Puériculture",
    1560: "Mobilier intérieur",
    1920: "Linge de maison",
    1940: "Épicerie",
    2060: "Décoration",
    2220: "Animalerie",
    2280: "Journaux & magazines anciens",
    2403: "Lots de livres & revues",
    2462: "Lots jeux vidéo",
    2522: "Papeterie",
    2582: "Mobilier de jardin",
    2583: "Piscine & spa",
    2585: "Outillage jardin",
    2705: "Livres neufs",
    2905: "Jeux PC en téléchargement",
}

PRDTYPECODES: tuple[int, ...] = tuple(sorted(CLASS_COUNTS))


def category_name(code: int) -> str:
    """English community name of a prdtypecode, or ``"unknown"``."""
    try:
        return CATEGORY_NAMES.get(int(code), "unknown")
    except (TypeError, ValueError):
        return "unknown"
