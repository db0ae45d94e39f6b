"""Synthetic Rakuten France catalogue generator.

The real challenge data (``X_train_update.csv`` / ``Y_train_CVw08PX.csv``) may not be
redistributed, so tests, demos and drift drills run on a synthetic catalogue that mimics
its published statistics (DATA_FACTS: docs/DATA.md, "Real data facts"):

* **Files**: ``write_catalogue`` writes both CSV files in exactly the real layout: an
  unnamed index column (0..rows-1), then ``designation,description,productid,imageid``
  for X and ``prdtypecode`` for Y; comma separated, double-quoted where needed, UTF-8.
* **Labels**: the 27 ``prdtypecode`` values drawn with priors proportional to the real
  ``CLASS_COUNTS`` (2583 ~12%, 60 ~1%).
* **Titles** (``designation``): lengths follow the real quantiles (mean ~70, median ~66,
  quartiles 44/92, max 250 characters); titles carry brands, sizes, volume numbers
  ("Tome 3", "N° 69") and model codes ("XJ-2000", "Réf. 4512B").
* **Descriptions**: empty in ~35% of rows (more often for books and magazines); non-empty
  ones have median ~640 characters (quartiles ~230/~970, tail to several thousand).
  ~25% of non-empty descriptions carry HTML tags (``<p>``, ``<br />``, ``<li>``, ``<b>``),
  ~60% HTML entities (``&eacute;``, ``&amp;``, ``&#39;``), ~1.5% mojibake (``Ã©``, ``Â·``);
  some contain commas, double quotes and newlines.
* **Languages**: per product ~62% French, ~30% English, ~3% German, ~3% Japanese (kana and
  kanji), ~2% Spanish/Italian, with a mild class dependence (used books lean English,
  figures and trading cards lean Japanese).
* **Vocabulary and difficulty**: every token of a product is drawn from one of several
  pools: language function words, language filler words, the generic words shared by
  many classes, the vocabulary shared by the product's overlap group (books 10/2403/2705/
  2280; games 40/50/60/2462/2905; toys & childcare 1280/1281/1302/1320/1301; home
  1560/1920/2060/2582; collectibles 1140/1160/1180/1300; pool & garden 2583/2585) and the
  class's own marking words (the real per-class frequent words, with English, German and
  Japanese equivalents). A third of the products are "weak" (few class words).
* **Marketplace mess** (what real catalogues have and a clean generator lacks; rates are
  arguments of ``generate_products`` / ``write_catalogue``, defaults plausible for a large
  marketplace, not fitted to one score):

  - *label noise* (``label_noise``, default 5%): the product is a neighbouring class's
    product filed under this code (a new book under used books, a board game under toys).
    Noise goes to neighbours (``_NEIGHBOURS``: the DATA_FACTS families plus 1180 between
    1140 and 1281, 1302 next to 2582, 2280 next to 2403), weighted, never uniformly. The
    label mix stays the real one: noise changes what the product is, not its code.
  - *near-duplicates* (``near_duplicates``, default 3%): the same item listed again by
    another seller under a neighbouring code: title copied (40%) or nearly (a number, the
    case or a suffix such as "- Neuf" changed), description copied (65%), dropped (20%) or
    cut (15%).
  - *generic titles* (``generic_titles``, default 3%): titles with no class word, brand,
    line or attribute; half of them very short ("Lot", "Neuf", "Taille unique", "Lot de 2"),
    half a run of the generic DATA_FACTS words at the usual length. Their descriptions still
    describe the product (or are empty, as for 35% of all rows).
  - *product lines*: a long tail of invented series / franchise / model-range names (400 per
    class, Zipf-distributed, 15% of them borrowed from a neighbouring class as franchises
    cross classes), named in 65% of titles and half of those descriptions: in a few thousand
    rows most names are seen once (noise a weakly regularised model memorises), in 85,000
    they recur.

  With these, on ~4,000 training rows a TF-IDF + LinearSVC lands near the real ~0.73-0.76,
  a strongly regularised linear model beats the weakly regularised default by several
  points, and the weakest classes are the neighbouring families, as on real data
  (``benchmarks/bench_synth_realism.py``; docs/DATA.md). ``provenance=True`` returns, per
  row, what it really is (``content_code``), the row it copies (``duplicate_of``) and
  whether its title is generic.

Drift kinds (``DRIFT_KINDS``), for exercising a drift monitor:

* ``"none"``: the reference distribution above.
* ``"vocabulary"``: a different vocabulary: ~25-30% of tokens come from out-of-vocabulary
  words (invented product words and new brands that never occur in ``"none"`` data), in
  place of content words (function and filler words keep their share), and the language mix
  moves to ~30% French, 40% English, 12% German, 12% Japanese, 6% Spanish/Italian. As with
  real new products, the new words and brands belong to classes (each class has its own
  share of them): a model that never saw them loses accuracy, one trained on labelled
  drifted products learns them back (``benchmarks/bench_feedback.py``).
* ``"length"``: texts get **longer**: titles and non-empty descriptions are ~2.5x longer
  (titles capped at 600 characters instead of 250) and only ~5% of descriptions are empty.
* ``"classes"``: class priors strongly shifted: four normally small classes (60, 1301,
  2462, 1940) make up ~80% of rows, ten others share the remaining ~20%, and the other
  13 classes (including the usual majority class 2583) vanish.

Everything not targeted by the drift kind keeps its ``"none"`` distribution (conditional
on the class). Output is fully determined by ``(rows, seed, drift, start_productid)`` and
the three rates.
"""

from __future__ import annotations

import functools
import pathlib
import re

import numpy as np
import pandas as pd

from mlops_cli.categories import CLASS_COUNTS, PRDTYPECODES

__all__ = ["DRIFT_KINDS", "GENERIC_TITLES", "LABEL_NOISE", "LANGUAGES", "NEAR_DUPLICATES",
           "generate_products", "write_catalogue"]

DRIFT_KINDS = ("none", "vocabulary", "length", "classes")

LANGUAGES = ("fr", "en", "de", "ja", "es", "it")
_LANG_SHARES = (0.62, 0.30, 0.03, 0.03, 0.01, 0.01)
_LANG_SHARES_VOCAB_DRIFT = (0.30, 0.40, 0.12, 0.12, 0.03, 0.03)

X_FILENAME = "X_train_update.csv"
Y_FILENAME = "Y_train_CVw08PX.csv"

# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------

# Function words: carry the language, not the class. French markers ("et", "pour",
# "avec", "les", "des", "vous") appear in no other language's list.
_FUNCTION = {
    "fr": (
        "de la le et les des pour avec en du un une est sur dans à vous votre vos ce cette "
        "qui par au aux très plus ne pas sont il elle se sa son ses c'est d'un d'une qu'il "
        "n'est jusqu'à l'utilisation l'eau d'origine tout tous peut ou mais"
    ),
    "en": (
        "the and for with of to a is your this in on it are you can be it's don't you'll "
        "from that by as an or will all our"
    ),
    "de": "der die das und mit für ist ein eine von zu den dem Sie auf nicht auch sehr im",
    "es": "el los las y con para una es del en por muy su que al",
    "it": "il di e con per una della è del che molto alla sono gli",
    "ja": "の と は を が に で です ます から",
}

# Filler: ordinary descriptive words of each language, shared by every class.
_FILLER = {
    "fr": (
        "nouveau nouvelle idéale permet permettant disponible livré livrée excellent "
        "excellente solide robuste léger résistante conçu fabriqué original garantie état "
        "article modèle élégante unique simple rapide stock prix photo voir envoi colis soin "
        "fonctionnel ensemble chaque vendu sans aussi bien ainsi environ votre offrir "
        "magnifique durable pratique confortable & facilement rapidement"
    ),
    "en": (
        "new available designed made durable lightweight great perfect high item model "
        "shipping condition please note unique stylish simple fast comfortable easily "
        "each set also well about premium best & original"
    ),
    "de": (
        "neu hochwertig langlebig einfach praktisch ideal Artikel Modell Versand perfekt "
        "leicht robust stabil original"
    ),
    "es": "nuevo disponible ideal perfecto fácil alta calidad modelo envío original práctico",
    "it": "nuovo disponibile ideale perfetto facile alta qualità modello spedizione originale",
    "ja": "高品質 人気 便利 おしゃれ 大人気 日本製 送料無料 正規品 新作 限定",
}

# Generic words frequent in 8+ real classes (DATA_FACTS), and their equivalents.
_GENERIC = {
    "fr": (
        "couleur produit taille haute comprend caractéristiques facile qualité neuf marque "
        "main contenu inclus poids emballage type paquet matériel description forme "
        "utilisation plastique couleurs jeu forfait temps cadeau eau grand convient longueur "
        "mode blanc matériau ans raison idéal parfait doux dimensions"
    ),
    "en": (
        "color product size high includes features easy quality new brand hand content "
        "included weight package type pack material description shape use plastic colors "
        "game time gift water large suitable length mode white ideal perfect soft dimensions"
    ),
    "de": (
        "Farbe Produkt Größe Qualität neu Marke Inhalt Gewicht Verpackung Material Kunststoff "
        "Geschenk Wasser groß geeignet Länge weiß ideal perfekt weich Abmessungen"
    ),
    "es": (
        "color producto tamaño calidad nuevo marca peso material plástico regalo agua grande "
        "ideal perfecto suave"
    ),
    "it": (
        "colore prodotto taglia qualità nuovo marca peso materiale plastica regalo acqua "
        "grande ideale perfetto morbido"
    ),
    "ja": "サイズ カラー 新品 素材 重量 商品 プレゼント 付属品 仕様 寸法",
}

# Overlap groups: vocabulary shared by sibling classes.
_GROUP_OF = {
    10: "books", 2403: "books", 2705: "books", 2280: "books",
    40: "games", 50: "games", 60: "games", 2462: "games", 2905: "games",
    1280: "toys", 1281: "toys", 1302: "toys", 1320: "toys", 1301: "toys",
    1560: "home", 1920: "home", 2060: "home", 2582: "home",
    1140: "collect", 1160: "collect", 1180: "collect", 1300: "collect",
    2583: "garden", 2585: "garden",
    1940: "food", 2220: "pets", 2522: "paper",
}

_GROUP_WORDS = {
    "books": {
        "fr": (
            "livre roman auteur éditions pages broché couverture lecture chapitre histoire "
            "collection édition format poche volume illustrations préface texte ouvrage récit "
            "tome état occasion bon exemplaire"
        ),
        "en": (
            "book novel author edition paperback hardcover pages story volume chapter reading "
            "cover illustrated series"
        ),
        "de": "Buch Roman Autor Ausgabe Seiten Band Taschenbuch",
        "es": "libro novela autor edición páginas",
        "it": "libro romanzo autore edizione pagine",
        "ja": "本 小説 著者 文庫 漫画 巻",
    },
    "games": {
        "fr": (
            "jeu jeux vidéo console playstation xbox nintendo switch ps4 ps3 pc joueur manette "
            "graphismes gameplay édition multijoueur aventure niveau mode"
        ),
        "en": "game games video console player controller multiplayer gameplay edition",
        "de": "Spiel Spiele Konsole Spieler",
        "es": "juego juegos consola",
        "it": "gioco giochi console",
        "ja": "ゲーム 任天堂 ソフト",
    },
    "toys": {
        "fr": (
            "enfant enfants jouet jeu bébé âge éducatif cadeau anniversaire fille garçon "
            "amusant coloré mois sécurité développement imagination"
        ),
        "en": "kids children toy baby gift educational fun boys girls",
        "de": "Kinder Spielzeug Baby Geschenk",
        "es": "niños juguete bebé",
        "it": "bambini giocattolo",
        "ja": "子供 おもちゃ 知育",
    },
    "home": {
        "fr": (
            "maison décoration intérieur salon chambre design moderne style bois métal tissu "
            "blanc noir gris cm pratique élégant meuble"
        ),
        "en": "home decor living room bedroom modern style wood fabric",
        "de": "Haus Wohnzimmer Dekoration Holz modern",
        "es": "casa decoración salón",
        "it": "casa decorazione soggiorno",
        "ja": "インテリア 北欧 家具",
    },
    "collect": {
        "fr": (
            "collection figurine série édition personnage limitée officiel collector boîte "
            "manga anime"
        ),
        "en": "collectible figure series limited official character",
        "de": "Sammlerfigur Sammlung limitiert",
        "es": "colección figura",
        "it": "collezione figura",
        "ja": "フィギュア 限定 コレクション",
    },
    "garden": {
        "fr": (
            "jardin extérieur eau tuyau pression kit installation entretien pièce raccord "
            "diamètre"
        ),
        "en": "garden outdoor water hose pressure kit",
        "de": "Garten Wasser Schlauch Pumpe",
        "es": "jardín agua",
        "it": "giardino acqua",
        "ja": "庭 水",
    },
}

# Class-marking words. French lists start with the real most frequent words per class
# (DATA_FACTS, in frequency order), followed by further typical words.
_CLASS_WORDS = {
    10: {
        "fr": "engineering art guide design handbook introduction théorie manuel méthode études "
              "principes science analysis",
        "en": "engineering art guide design handbook introduction theory practice analysis "
              "science",
        "de": "Handbuch Technik Kunst Leitfaden Einführung",
        "ja": "洋書 ガイド 技術",
    },
    40: {
        "fr": "import cas allemand version informations fiche fournies néanmoins existe titres "
              "langue majorité éditeur langues apparaissent français attention imports pegi "
              "blister",
        "en": "import version language publisher region pal ntsc sealed",
        "de": "Version Sprache deutsch Import USK",
        "ja": "輸入版 日本語 海外版",
    },
    50: {
        "fr": "nintendo compatible console manette boutons charge jeux gamepad noir playstation "
              "contrôleur fil usb câble silicone wii batterie pad housse protection chargeur "
              "support joystick adaptateur coque étui",
        "en": "controller charger cable case cover gamepad wireless adapter charging skin usb",
        "de": "Controller Ladekabel Hülle kabellos Ladestation",
        "ja": "コントローラー 充電器 ケース 互換",
    },
    60: {
        "fr": "console nom affichage ecran tactile vidéo numéro jeux écran communication usb "
              "portable mini game lecteur rétro bits intégré classique hdmi émulateur pouces",
        "en": "handheld retro console screen built-in classic emulator hdmi inch bits",
        "de": "Handheld Bildschirm Konsole integriert Retro",
        "ja": "携帯ゲーム機 本体 画面 レトロ",
    },
    1140: {
        "fr": "figurine star wars pvc licence dragon officielle pop ball figure série collection "
              "figurines porte super action env man funko statue vinyl socle articulée",
        "en": "figure statue vinyl action collectible bobblehead pop star wars",
        "de": "Figur Statue Sammelfigur Sammlerstück",
        "ja": "完成品 ねんどろいど 一番くじ 景品",
    },
    1160: {
        "fr": "carte magic commune dragon mtg ball pokemon pokémon adrenalyn panini rare édition "
              "série serie deck reverse super attax booster holo vf yugioh foil",
        "en": "card booster holo foil rare trading deck pokemon magic",
        "de": "Karte Sammelkarte Booster selten",
        "ja": "カード トレカ 拡張パック 遊戯王 ポケモンカード",
    },
    1180: {
        "fr": "warhammer figurine cartes miniatures heroclix rôle games workshop peinture socle "
              "armée règles scénario jdr donjons dés plateau",
        "en": "miniatures tabletop roleplaying rulebook army painted dice warhammer",
        "de": "Miniaturen Rollenspiel Würfel Armee",
        "ja": "ミニチュア ウォーハンマー 塗装済み",
    },
    1280: {
        "fr": "jouet jouets toy peluche jouer pcs stress doudou voiture âge environnement poupée "
              "capacité super bébé pièces puzzle enfant construction robot musical éveil "
              "lumineux",
        "en": "toy plush doll puzzle car stuffed building robot",
        "de": "Plüsch Puppe Puzzle Auto Kuscheltier",
        "ja": "ぬいぐるみ 人形 パズル",
    },
    1281: {
        "fr": "cartes jouets jouet game toy jouer joueurs stress bébé faire amusant toxique "
              "adultes jeux mini choix super société plateau dés stratégie famille soirée "
              "partie",
        "en": "board party players cards dice strategy family game",
        "de": "Brettspiel Gesellschaftsspiel Karten Würfel Spieler",
        "ja": "ボードゲーム カードゲーム パーティー",
    },
    1300: {
        "fr": "drone générique dji batterie quadcopter voiture mah charge vol distance caméra "
              "télécommande fpv avion vitesse mavic contrôle appareil hélicoptère rc échelle "
              "maquette hélice moteur lipo brushless",
        "en": "drone quadcopter propeller rc scale model brushless lipo remote camera",
        "de": "Drohne Modellbau Propeller Fernbedienung Akku",
        "ja": "ドローン ラジコン プロペラ バッテリー",
    },
    1301: {
        "fr": "chaussettes bébé paire filles coton slip sexe garçons cartoon chaud pieds belle "
              "âge matériaux nouveau mal charmant peau naissance antidérapantes fléchettes "
              "billard baby-foot",
        "en": "socks baby cotton pair darts billiard foosball newborn",
        "de": "Socken Baby Baumwolle Dart",
        "ja": "靴下 ベビー ダーツ",
    },
    1302: {
        "fr": "stress pêche lampe super vie sport led camping haut quand aluminium extérieur "
              "applicable ultra batterie poche toy jouets trampoline balançoire gonflable "
              "ballon trottinette plage tente",
        "en": "outdoor camping fishing lamp flashlight sport beach inflatable trampoline",
        "de": "Outdoor Angeln Taschenlampe Camping",
        "ja": "アウトドア 釣り キャンプ ライト",
    },
    1320: {
        "fr": "bébé sac voyage nouveau enfant sexe bavoir famille élégant différence bureau "
              "bandoulière femmes montrer beau rose applicables occasion poussette biberon "
              "siège tétine langer allaitement",
        "en": "baby stroller bottle bib diaper carrier changing bag",
        "de": "Kinderwagen Babyflasche Lätzchen Wickeltasche",
        "ja": "ベビーカー 哺乳瓶 抱っこ紐",
    },
    1560: {
        "fr": "hauteur pieds confort rangement largeur structure polyester cuisine salle métal "
              "livraison matelas maison mousse également moderne pratique noir table chaise "
              "armoire commode étagère tabouret lit buffet tiroirs",
        "en": "chair table shelf cabinet drawer wardrobe bed desk stool mattress",
        "de": "Stuhl Tisch Regal Schrank Möbel",
        "ja": "椅子 収納 テーブル 棚",
    },
    1920: {
        "fr": "coussin oreiller taie plaît canapé lin décoration coton permettre home lavage "
              "intérieur lavable couverture fermeture maison légère différence housse nappe "
              "drap rideau plaid parure couette",
        "en": "pillow cushion cover pillowcase throw linen curtain bedding",
        "de": "Kissen Kissenbezug Bettwäsche Vorhang Decke",
        "ja": "クッション 枕カバー 布団",
    },
    1940: {
        "fr": "sachet ingrédients gluten sirop contenance bonbons bio sel fini bonbon modèles "
              "sucre grammes boutique multicolore glucose général espresso chocolat thé café "
              "biscuits confiserie épices miel",
        "en": "candy chocolate sugar ingredients tea coffee organic gluten flavor snack",
        "de": "Zutaten Schokolade Zucker Bonbons Kaffee",
        "ja": "お菓子 抹茶 チョコレート 飴",
    },
    2060: {
        "fr": "décoration chambre led image maison plaît etc différence remarque salon lampe "
              "légèrement différent noël bricolage salle nouvelle sera sticker mural "
              "autocollant tableau guirlande bougie vase cadre horloge",
        "en": "decoration wall sticker decal lights christmas vase frame lamp",
        "de": "Wandtattoo Deko Weihnachten Lichterkette",
        "ja": "ウォールステッカー 飾り 置物 照明",
    },
    2220: {
        "fr": "chien animaux pet dog compagnie chiens animal images légèrement cat vêtements "
              "chat polyester hiver dessus différence différentes collier laisse harnais "
              "gamelle griffoir niche croquettes litière",
        "en": "dog cat pet leash collar harness bowl puppy kitten",
        "de": "Hund Katze Haustier Leine Halsband",
        "ja": "犬 猫 ペット 首輪",
    },
    2280: {
        "fr": "france journal paris magazine francaise monde vie jean revue presse parisien "
              "leon politique salon art arts illustre action ancien hebdomadaire quotidien "
              "actualité match cinéma époque",
        "en": "newspaper magazine issue vintage weekly press",
        "de": "Zeitung Zeitschrift Ausgabe Heft Jahrgang",
        "ja": "雑誌 新聞 号 昭和",
    },
    2403: {
        "fr": "livres tomes revues livre volumes partitions revue collection vol magazine tome "
              "histoire mangas édition bon pages numéros romans lot ensemble série complète "
              "intégrale bd",
        "en": "books lot volumes magazines comics manga bundle complete set",
        "de": "Bücher Bände Sammlung Zeitschriften Konvolut",
        "ja": "全巻 セット 漫画 コミック",
    },
    2462: {
        "fr": "jeux xbox nintendo console voir photos manette manettes microsoft playstation "
              "boite wii micro video boy super game slim lot pack notice complet fonctionne "
              "cartouche cartouches ds gamecube",
        "en": "lot bundle cartridge tested working boxed manual console games",
        "de": "Konvolut Spiele getestet Sammlung Konsole",
        "ja": "まとめ売り 中古 動作確認",
    },
    2522: {
        "fr": "papier format pages bloc notes couverture carnet classique solide jaune "
              "facilement texture excellente recto verso pale cahier noir stylo crayon agenda "
              "enveloppes classeur feutre",
        "en": "notebook paper pen pencil stationery notepad sheets ink envelope",
        "de": "Notizbuch Papier Stift Heft Block",
        "ja": "ノート 文房具 ボールペン 手帳",
    },
    2582: {
        "fr": "jardin hauteur résistant extérieur aluminium polyester table largeur diamètre "
              "gris facilement livraison verre noir structure également ensemble grâce "
              "parasol transat bain soleil tonnelle pergola banc fauteuil terrasse",
        "en": "garden patio outdoor parasol lounger gazebo bench furniture",
        "de": "Gartenmöbel Sonnenschirm Liegestuhl Gartentisch",
        "ja": "ガーデン パラソル ベンチ",
    },
    2583: {
        "fr": "piscine filtration pompe sol piscines pvc hors système liner kit filtre sable "
              "diamètre volume bâche structure débit hauteur spa gonflable robot nettoyage "
              "chlore escalier chauffage tubulaire skimmer",
        "en": "pool spa pump filter sand liner cover ladder chlorine inflatable",
        "de": "Pool Schwimmbad Pumpe Sandfilter Poolfolie",
        "ja": "プール ポンプ フィルター",
    },
    2585: {
        "fr": "jardin compatible diamètre accessoires outil efficace pression tuyau outils "
              "pratique livraison intérieur coupe poignée également résistance fournisseur "
              "arrosage tondeuse sécateur débroussailleuse tronçonneuse pelle râteau "
              "pulvérisateur",
        "en": "mower trimmer hose tool pruner saw blade sprayer nozzle",
        "de": "Rasenmäher Heckenschere Schlauch Werkzeug Gartenschere",
        "ja": "園芸 剪定 ホース",
    },
    2705: {
        "fr": "vie monde tome petit toujours livre guerre premier jeune mort homme faire amour "
              "été dont place deux terre roman femme nuit secret coeur enfants mystère destin",
        "en": "life world war love death young man night secret heart",
        "de": "Leben Welt Krieg Liebe Tod Geschichte",
        "ja": "物語 世界 恋 戦争 文庫",
    },
    2905: {
        "fr": "windows requise propos configuration compte connexion note internet steam ghz "
              "ram processeur directx disque système intel geforce mémoire téléchargement "
              "code activation clé nvidia radeon dlc numérique",
        "en": "download steam key activation windows processor memory graphics directx "
              "requirements digital",
        "de": "Download Schlüssel Arbeitsspeicher Grafikkarte Prozessor",
        "ja": "ダウンロード版 推奨 動作環境",
    },
}

# Brands (multi-word allowed). Chinese-marketplace generic brands are shared by many classes.
_SHARED_BRANDS = ("Generique", "Générique", "Sans marque", "OEM", "Yosoo", "Akozon",
                  "Shanrya", "Asupermall", "Ccdes")
_BRANDS = {
    10: ("Dunod", "Eyrolles", "Wiley", "Springer", "Larousse", "PUF", "Armand Colin",
         "Hachette"),
    40: ("Ubisoft", "Electronic Arts", "Activision", "Sega", "Capcom", "Square Enix",
         "Konami", "Nintendo", "Sony"),
    50: ("Nintendo", "Sony", "Hori", "PowerA", "Trust", "Thrustmaster", "Subsonic", "Bigben"),
    60: ("Nintendo", "Sony", "Microsoft", "Sega", "Atari", "Anbernic", "PowKiddy"),
    1140: ("Funko", "Bandai", "Banpresto", "Hasbro", "Mattel", "Neca", "Hot Toys",
           "Good Smile"),
    1160: ("Panini", "Topps", "Wizards of the Coast", "Pokémon", "Konami", "Upper Deck"),
    1180: ("Games Workshop", "Citadel", "WizKids", "Asmodee", "Fantasy Flight", "Black Book"),
    1280: ("Lego", "Playmobil", "VTech", "Fisher-Price", "Vilac", "Janod", "Smoby", "Hasbro",
           "Mattel", "Djeco"),
    1281: ("Asmodee", "Hasbro", "Gigamic", "Ravensburger", "Iello", "Mattel", "Goliath",
           "Djeco"),
    1300: ("DJI", "Syma", "Hubsan", "Parrot", "Tamiya", "Revell", "Heller", "Airfix", "JJRC"),
    1301: ("Petit Bateau", "Sergent Major", "Winmau", "Unicorn", "Harrows", "Garlando"),
    1302: ("Bestway", "Intex", "Coleman", "Hudora", "Nerf", "Wham-O", "Quechua"),
    1320: ("Chicco", "Babymoov", "Bébé Confort", "Tommee Tippee", "Avent", "Béaba",
           "Red Castle", "Maxi-Cosi"),
    1560: ("Ikea", "Vente-unique", "Alinea", "Conforama", "Habitat", "Maisons du Monde"),
    1920: ("Linvosges", "Dodo", "Blanc des Vosges", "Tradilinge", "Maisons du Monde",
           "Home Deco"),
    1940: ("Haribo", "Lindt", "Nespresso", "Carambar", "Kinder", "Lipton", "Bonne Maman",
           "Milka"),
    2060: ("Maisons du Monde", "Atmosphera", "Zara Home", "Hema", "Lumineo", "Home Deco"),
    2220: ("Trixie", "Kerbl", "Zolux", "Flamingo", "Royal Canin", "Purina", "Ferplast"),
    2280: ("Paris Match", "Le Figaro", "L'Illustration", "Le Petit Journal", "Le Monde",
           "Ici Paris"),
    2403: ("Glénat", "Dargaud", "Kana", "Pika", "Casterman", "Dupuis", "Le Livre de Poche",
           "Marvel"),
    2462: ("Nintendo", "Sony", "Microsoft", "Sega"),
    2522: ("Oxford", "Clairefontaine", "Moleskine", "Exacompta", "Bic", "Stabilo",
           "Paperblanks", "Leuchtturm1917"),
    2582: ("Hespéride", "Keter", "Allibert", "Jardiline", "Proloisirs", "Ubbink"),
    2583: ("Intex", "Bestway", "Zodiac", "Gre", "Kokido", "Hayward", "Polaris", "AstralPool"),
    2585: ("Gardena", "Bosch", "Fiskars", "Karcher", "Ryobi", "Black+Decker", "Einhell",
           "Worx", "Hozelock"),
    2705: ("Gallimard", "Folio", "Pocket", "Le Livre de Poche", "J'ai Lu", "Albin Michel",
           "Flammarion", "Hachette", "Robert Laffont", "Seuil"),
    2905: ("Ubisoft", "Bethesda", "Electronic Arts", "Activision", "2K Games", "Focus Home",
           "Paradox"),
}
# Brands that only exist under vocabulary drift.
_DRIFT_BRANDS = ("Zentrix", "Quovalo", "Brinkora", "Velmaro", "Taskyo", "Nordvik", "Lumexa",
                 "Qintara", "Ospryn", "Kavolux", "Drevia", "Xumbo")

# Title attribute kinds per class (volume numbers, sizes, model codes...).
_ATTRS = {
    10: ("edition", "year", "pages", "tome"),
    40: ("platform", "platform", "edition"),
    50: ("platform", "model", "mah"),
    60: ("platform", "model", "inch"),
    1140: ("height", "model", "numero"),
    1160: ("cardno", "numero", "edition"),
    1180: ("model", "pcs"),
    1280: ("age", "pcs", "dims"),
    1281: ("age", "players", "pcs"),
    1300: ("mah", "model", "scale"),
    1301: ("clothes", "pcs"),
    1302: ("dims", "power", "pcs"),
    1320: ("age", "dims", "model"),
    1560: ("dims", "model", "dims"),
    1920: ("dims", "dims", "pcs"),
    1940: ("volume", "pcs", "volume"),
    2060: ("dims", "pcs", "power"),
    2220: ("clothes", "dims", "model"),
    2280: ("numero", "year", "numero"),
    2403: ("tome", "pcs", "numero"),
    2462: ("platform", "pcs"),
    2522: ("paper", "pages", "pcs"),
    2582: ("dims", "pcs", "model"),
    2583: ("pool", "flow", "power", "model"),
    2585: ("power", "model", "dims"),
    2705: ("tome", "edition", "pages"),
    2905: ("pcplatform", "edition"),
}

# Class boilerplate sentences (real descriptions repeat such notices).
_BOILERPLATE = {
    40: {
        "fr": ("Attention : cet article est un import allemand, la majorité des informations "
               "fournies sur la fiche existe néanmoins en français.",
               "Version import : les titres apparaissent dans la langue de l'éditeur, "
               "langues disponibles : allemand, anglais, français."),
        "en": ("Please note: this is an import version, the game language may differ from "
               "the publisher's description.",),
    },
    2905: {
        "fr": ("Configuration requise : Windows 10 64 bits, processeur Intel Core i5 2,8 GHz, "
               "8 Go de RAM, carte graphique GeForce GTX 970, DirectX 11, 50 Go d'espace "
               "disque.",
               "Connexion internet et compte Steam requis pour l'activation du jeu."),
        "en": ("Minimum requirements: Windows 10, Intel Core i5 processor, 8 GB RAM, GeForce "
               "GTX 970, DirectX 11. Steam account and internet connection required.",),
    },
    1940: {
        "fr": ("Ingrédients : sucre, sirop de glucose, gélatine, acidifiant : acide citrique, "
               "arômes. Sans gluten.",
               "Contenance : 250 grammes. À conserver dans un endroit sec et frais."),
        "en": ("Ingredients: sugar, glucose syrup, gelatine, citric acid, flavourings. "
               "Gluten free.",),
    },
    2583: {
        "fr": ("Débit de la pompe : 3 785 L/h. Filtration à sable, bâche de protection et "
               "tapis de sol inclus.",
               "Piscine hors sol tubulaire, liner en PVC renforcé, montage facile sans "
               "outils."),
        "en": ("Pump flow rate: 3,785 L/h. Sand filter, cover and ground cloth included.",),
    },
    2522: {
        "fr": ("Format A5, 96 pages lignées, papier 90 g recto verso, couverture rigide.",),
        "en": ("A5 format, 96 lined pages, 90 gsm paper, hard cover.",),
    },
    1301: {
        "fr": ("Tailles disponibles : 0-6 mois, 6-12 mois, 12-24 mois. Matière : 80% coton, "
               "20% polyester.",),
        "en": ("Sizes: 0-6 months, 6-12 months. Material: 80% cotton, 20% polyester.",),
    },
    2220: {
        "fr": ("Convient pour chiens et chats de petite et moyenne taille.",),
        "en": ("Suitable for small and medium dogs and cats.",),
    },
    2280: {
        "fr": ("Journal ancien en bon état, quelques rousseurs, voir photos.",),
        "en": ("Vintage newspaper in good condition, see photos.",),
    },
    2462: {
        "fr": ("Lot vendu en l'état, consoles testées et fonctionnelles, voir photos.",),
        "en": ("Sold as is, tested and working, see photos.",),
    },
    1300: {
        "fr": ("Batterie LiPo 7,4 V 1500 mAh, temps de vol environ 15 minutes, portée 100 m.",),
        "en": ("7.4V 1500mAh LiPo battery, flight time about 15 minutes.",),
    },
    1160: {
        "fr": ("Carte en très bon état, sortie de booster, envoi sous sleeve et toploader.",),
        "en": ("Near mint condition, shipped in sleeve and toploader.",),
    },
    2585: {
        "fr": ("Livré avec poignée ergonomique et lame en acier trempé, garantie fournisseur "
               "2 ans.",),
        "en": ("Supplied with ergonomic handle and hardened steel blade, 2 year warranty.",),
    },
}

_FEATURE_LABELS = {
    "fr": ("Caractéristiques :", "Dimensions :", "Couleur :", "Matériau :", "Poids :",
           "Marque :"),
    "en": ("Features:", "Dimensions:", "Color:", "Material:", "Weight:", "Brand:"),
}
_COLORS = {
    "fr": ("noir", "blanc", "gris", "rouge", "bleu", "vert", "rose", "beige", "multicolore"),
    "en": ("black", "white", "grey", "red", "blue", "green", "pink", "beige", "multicolor"),
}
_MATERIALS = {
    "fr": ("plastique", "bois", "métal", "coton", "polyester", "PVC", "aluminium", "verre"),
    "en": ("plastic", "wood", "metal", "cotton", "polyester", "PVC", "aluminium", "glass"),
}

# Per-class language tilt (multiplies the base language shares before renormalising).
_LANG_TILT = {
    10: {"en": 2.5, "fr": 0.6},
    40: {"ja": 2.0, "de": 2.0},
    1140: {"ja": 3.0},
    1160: {"ja": 3.0, "en": 1.3},
    2280: {"fr": 1.4, "en": 0.2},
    2705: {"fr": 1.2},
    2905: {"en": 1.5},
    2462: {"ja": 1.5},
}

# Per-class relative chance of an empty description (books and magazines are often bare).
_EMPTY_TILT = {10: 2.3, 2280: 1.5, 2403: 1.2, 2705: 1.1, 1160: 1.4, 2462: 1.3, 1140: 1.2,
               40: 0.7, 2905: 0.5, 2583: 0.8, 1560: 0.8, 2582: 0.8}
# Per-class relative description length.
_DESC_LEN_TILT = {2905: 1.3, 2583: 1.25, 1560: 1.2, 2582: 1.2, 1300: 1.15, 1160: 0.6,
                  2280: 0.6, 10: 0.7, 2462: 0.8}

# Classes used by the "classes" drift kind.
# A holiday-season mix: consoles, second-hand game lots (a class real models confuse with its
# family 40/50/60/2905), baby socks, sweets; ten others minor.
_DRIFT_DOMINANT = {60: 0.25, 1301: 0.20, 2462: 0.20, 1940: 0.15}
_DRIFT_MINOR = (10, 40, 50, 1180, 2220, 2280, 2905, 1320, 1302, 1281)

# Length quantile functions (knots of u -> characters), matching the real statistics.
_TITLE_Q = ((0.0, 0.005, 0.05, 0.25, 0.50, 0.75, 0.95, 0.99, 0.999, 1.0),
            (6.0, 11.0, 21.0, 44.0, 66.0, 91.5, 130.0, 170.0, 220.0, 250.0))
_DESC_Q = ((0.0, 0.03, 0.10, 0.25, 0.50, 0.75, 0.90, 0.97, 0.995, 1.0),
           (4.0, 25.0, 80.0, 230.0, 655.0, 900.0, 1350.0, 2200.0, 4000.0, 6500.0))

# Token sources.
_SRC_FUNC, _SRC_FILLER, _SRC_GENERIC, _SRC_GROUP, _SRC_CLASS, _SRC_OOV = range(6)
_N_SRC = 6
# Base source mixes (function, filler, generic, group, class, oov).
_TITLE_MIX = np.array([0.06, 0.06, 0.16, 0.20, 0.52, 0.0])
_DESC_MIX = np.array([0.34, 0.17, 0.17, 0.12, 0.20, 0.0])
_WEAK_SHARE = 0.35        # share of products with few class words
_WEAK_FACTOR = 0.12       # class-word share multiplier for weak products
_OOV_TITLE, _OOV_DESC = 0.30, 0.25   # out-of-vocabulary token share under vocabulary drift

# Defaults of the marketplace-mess rates (arguments of generate_products / write_catalogue).
LABEL_NOISE = 0.05        # products filed under a neighbouring code (what they are != label)
NEAR_DUPLICATES = 0.03    # products that (nearly) copy one filed under a neighbouring code
GENERIC_TITLES = 0.03     # titles with nothing of the class: "Lot", "Neuf", "Taille unique"

# Which codes a product is mistaken for / cross-listed under: the DATA_FACTS families (books
# 10/2403/2705; games 40/2462/2905/50/60; toys 1280/1281/1302/1320; home 1560/2060/1920/2582)
# plus the neighbours the community category names suggest (miniature games 1180 between
# figures 1140 and board games 1281; outdoor games 1302 next to garden furniture 2582; old
# magazines 2280 next to book lots 2403). Weights are relative within a row.
_NEIGHBOURS = {
    10: ((2705, 0.6), (2403, 0.3), (2280, 0.1)),
    2705: ((10, 0.6), (2403, 0.4)),
    2403: ((2705, 0.45), (10, 0.35), (2280, 0.2)),
    2280: ((2403, 0.6), (10, 0.4)),
    40: ((2462, 0.5), (2905, 0.2), (50, 0.2), (60, 0.1)),
    2462: ((40, 0.5), (60, 0.25), (50, 0.25)),
    2905: ((40, 1.0),),
    50: ((60, 0.4), (2462, 0.3), (40, 0.3)),
    60: ((2462, 0.5), (50, 0.5)),
    1280: ((1281, 0.4), (1302, 0.3), (1320, 0.15), (1140, 0.15)),
    1281: ((1280, 0.5), (1180, 0.3), (1160, 0.2)),
    1302: ((1280, 0.5), (2582, 0.3), (2583, 0.2)),
    1320: ((1280, 0.5), (1301, 0.5)),
    1180: ((1140, 0.4), (1281, 0.4), (1160, 0.2)),
    1140: ((1180, 0.5), (1280, 0.5)),
    1160: ((1281, 0.5), (1180, 0.5)),
    1300: ((1280, 0.6), (1302, 0.4)),
    1301: ((1320, 0.6), (1302, 0.4)),
    1560: ((2582, 0.4), (2060, 0.3), (1920, 0.3)),
    2060: ((1920, 0.4), (1560, 0.4), (2582, 0.2)),
    1920: ((2060, 0.6), (1560, 0.4)),
    2582: ((1560, 0.4), (2585, 0.3), (2583, 0.15), (1302, 0.15)),
    2583: ((2582, 0.5), (2585, 0.5)),
    2585: ((2582, 0.6), (2583, 0.4)),
    1940: ((2060, 0.5), (1920, 0.5)),
    2220: ((1920, 0.5), (1320, 0.5)),
    2522: ((2403, 0.5), (10, 0.5)),
}

# Product lines (series, franchises, model ranges: "Naruto", "Warhammer 40k", "Monopoly"): a
# long tail of names, each with a home class; a product takes a line of its own class, or with
# _LINE_CROSS probability one of a neighbouring class (a franchise sold as book, figure and
# game). Lines are Zipf-distributed, so in a few thousand products most names are seen once
# (noise a weakly regularised model memorises) and in 85,000 they recur (a usable signal).
_LINES_PER_CLASS = 400
_LINE_ZIPF = 1.0
_LINE_CROSS = 0.15
_LINE_IN_TITLE = 0.65     # share of titles naming their line
_LINE_IN_DESC = 0.5       # share of those whose description names it again

# Very short generic titles (French, English) and the share of generic titles that are these
# rather than a longer run of generic words at the usual length.
_SHORT_TITLES = {
    "fr": ("Lot", "Neuf", "Taille unique", "Lot de 2", "Lot de 3", "Article neuf", "Produit neuf",
           "Cadeau", "Divers", "Occasion", "Neuf sous blister", "Couleur au choix", "Vendu par lot",
           "Promo", "Lot divers", "Article de qualité", "Nouveau", "Taille unique - Neuf",
           "Très bon état", "Modèle aléatoire"),
    "en": ("Lot", "New", "One size", "Set of 2", "Gift", "Brand new", "Misc", "Bundle",
           "Random color", "New item"),
}
_SHORT_OF_GENERIC = 0.5
# What a second seller adds to a copied title.
_COPY_SUFFIX = {
    "fr": ("Neuf", "- Neuf", "NEUF", "- Livraison gratuite", "Envoi rapide", "Lot de 2", "Occasion",
           "- Garantie"),
    "en": ("New", "- NEW", "Free shipping", "Set of 2", "Used"),
}

_ENTITIES = tuple({
    "&": "&amp;", "é": "&eacute;", "è": "&egrave;", "ê": "&ecirc;", "à": "&agrave;",
    "â": "&acirc;", "ç": "&ccedil;", "ô": "&ocirc;", "î": "&icirc;", "ù": "&ugrave;",
    "û": "&ucirc;", "ë": "&euml;", "ï": "&iuml;", "'": "&#39;", '"': "&quot;",
    "°": "&deg;", "É": "&Eacute;", "ü": "&uuml;", "ö": "&ouml;", "ä": "&auml;",
}.items())


def _encode_entities(text: str) -> str:
    """Replace ``&``, accents and quotes by HTML entities (``&`` first)."""
    for ch, ent in _ENTITIES:
        if ch in text:
            text = text.replace(ch, ent)
    return text


def _split(text: str) -> list[str]:
    return text.split()


def _is_cjk(word: str) -> bool:
    return any("\u3000" <= ch <= "\u9fff" for ch in word)


@functools.lru_cache(maxsize=1)
def _oov_words() -> dict[str, tuple[str, ...]]:
    """Invented words that never occur in reference data (deterministic)."""
    rng = np.random.default_rng(20240611)
    onsets = ("br", "dr", "gl", "kr", "pl", "qu", "str", "tr", "v", "z", "x", "sk", "bl", "fl")
    vowels = ("a", "e", "i", "o", "u", "y", "ai", "ou", "ea")
    codas = ("x", "k", "n", "rt", "lm", "nd", "sk", "z", "q", "lt", "ff")
    words = set()
    while len(words) < 600:
        n = int(rng.integers(2, 4))
        w = "".join(onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))]
                    for _ in range(n)) + codas[rng.integers(len(codas))]
        words.add(w)
    latin = tuple(sorted(words))
    kana = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモラリルレロ"
    jwords = set()
    while len(jwords) < 200:
        n = int(rng.integers(3, 6))
        jwords.add("".join(kana[rng.integers(len(kana))] for _ in range(n)))
    ja = tuple(sorted(jwords))
    return {lang: (ja if lang == "ja" else latin) for lang in LANGUAGES}


def _line_names(n: int, taken: set[str]) -> tuple[str, ...]:
    """``n`` distinct invented product-line names ("Kalimo", "Tresan Vodi"), deterministic, none
    of them a word of the vocabulary pools or of the vocabulary-drift words."""
    rng = np.random.default_rng(20261207)
    cons = np.array(list("bcdfgklmnprstvz"))
    vows = np.array(list("aeiou"))
    ends = np.array(["", "", "", "n", "r", "s", "x", "l"])
    banned = {w.lower() for w in taken} | {w.lower() for w in _oov_words()["fr"]}
    out: list[str] = []
    seen: set[str] = set()

    def words(k: int) -> list[str]:
        syl = rng.integers(2, 4, size=k)
        c = cons[rng.integers(len(cons), size=(k, 3))]
        v = vows[rng.integers(len(vows), size=(k, 3))]
        e = ends[rng.integers(len(ends), size=k)]
        cv = np.char.add(c, v)
        two = np.char.add(cv[:, 0], cv[:, 1])
        w = np.where(syl == 2, two, np.char.add(two, cv[:, 2]))
        return np.char.add(w, e).tolist()

    while len(out) < n:
        first, second = words(n), words(n)
        both = rng.random(n) < 0.45
        for a, b, t in zip(first, second, both.tolist()):
            if a in banned or (t and b in banned):
                continue
            name = f"{a.capitalize()} {b.capitalize()}" if t else a.capitalize()
            if name not in seen and a not in seen:
                seen.add(name)
                seen.add(a)
                out.append(name)
                if len(out) == n:
                    break
    return tuple(out)


class _Compiled:
    """Flat word array and (source, class, language) -> pool lookup tables."""

    def __init__(self) -> None:
        self.codes = np.array(PRDTYPECODES, dtype=np.int64)
        n_cls, n_lang = len(PRDTYPECODES), len(LANGUAGES)
        words: list[str] = []
        self.pool_start = np.zeros((_N_SRC, n_cls, n_lang), dtype=np.int64)
        self.pool_size = np.zeros((_N_SRC, n_cls, n_lang), dtype=np.int64)
        cache: dict[tuple[str, ...], int] = {}
        oov = _oov_words()

        def add(pool: tuple[str, ...]) -> tuple[int, int]:
            if pool not in cache:
                cache[pool] = len(words)
                words.extend(pool)
            return cache[pool], len(pool)

        for ci, code in enumerate(PRDTYPECODES):
            group = _GROUP_WORDS.get(_GROUP_OF[code], {})
            cw = _CLASS_WORDS[code]
            for li, lang in enumerate(LANGUAGES):
                generic = tuple(_split(_GENERIC[lang]))
                cls_words = cw.get(lang) or cw["en"]  # es/it listings reuse English terms
                pools = {
                    _SRC_FUNC: tuple(_split(_FUNCTION[lang])),
                    _SRC_FILLER: tuple(_split(_FILLER[lang])),
                    _SRC_GENERIC: generic,
                    _SRC_GROUP: tuple(_split(group[lang])) if lang in group else generic,
                    _SRC_CLASS: tuple(_split(cls_words)),
                    # new products bring their own words: each class its share of them
                    _SRC_OOV: oov[lang][ci::len(PRDTYPECODES)],
                }
                for src, pool in pools.items():
                    self.pool_start[src, ci, li], self.pool_size[src, ci, li] = add(pool)
        self.words = np.array(words, dtype=object)
        # New brands belong to a class too: one of the shared new names and two of the class's
        # new words, capitalised.
        n = len(PRDTYPECODES)
        self.drift_brands = tuple(
            (_DRIFT_BRANDS[ci % len(_DRIFT_BRANDS)],
             *(w.capitalize() for w in oov["fr"][ci::n][:2])) for ci in range(n))
        # Spelling variants of every word: plain, "word.", "word,", then the same three
        # capitalised, then '"word"'. Japanese words take 。 and 、 and no capitals.
        variants: list[list[str]] = [[] for _ in range(7)]
        for w in words:
            cjk = _is_cjk(w)
            dot, comma = ("。", "、") if cjk else (".", ",")
            cw_ = w if cjk else w[:1].upper() + w[1:]
            for k, v in enumerate((w, w + dot, w + comma, cw_, cw_ + dot, cw_ + comma,
                                   w if cjk else f'"{w}"')):
                variants[k].append(v)
        self.variants = np.array([v for vs in variants for v in vs], dtype=object)
        self.code_index = {c: i for i, c in enumerate(PRDTYPECODES)}
        # Neighbours as padded (class, slot) tables: index and cumulative weight.
        width = max(len(v) for v in _NEIGHBOURS.values())
        self.nb_idx = np.zeros((n_cls, width), dtype=np.int64)
        self.nb_cum = np.ones((n_cls, width))
        for ci, code in enumerate(PRDTYPECODES):
            nb = _NEIGHBOURS[code]
            w = np.array([x[1] for x in nb], dtype=float)
            self.nb_idx[ci, :len(nb)] = [self.code_index[c] for c, _ in nb]
            self.nb_idx[ci, len(nb):] = self.nb_idx[ci, len(nb) - 1]
            self.nb_cum[ci, :len(nb)] = np.cumsum(w) / w.sum()
        self.line_names = _line_names(n_cls * _LINES_PER_CLASS, set(words))
        ranks = np.arange(_LINES_PER_CLASS, dtype=float)
        zipf = (ranks + 2.0) ** -_LINE_ZIPF
        self.line_cdf = np.cumsum(zipf) / zipf.sum()
        self.brands = [tuple(_BRANDS[c]) for c in PRDTYPECODES]
        self.attrs = [_ATTRS[c] for c in PRDTYPECODES]
        priors = np.array([CLASS_COUNTS[c] for c in PRDTYPECODES], dtype=float)
        self.priors = priors / priors.sum()
        drift_priors = np.zeros(n_cls)
        for c, p in _DRIFT_DOMINANT.items():
            drift_priors[self.code_index[c]] = p
        for c in _DRIFT_MINOR:
            drift_priors[self.code_index[c]] = (1.0 - sum(_DRIFT_DOMINANT.values())) / len(
                _DRIFT_MINOR)
        self.drift_priors = drift_priors / drift_priors.sum()
        self.lang_given_class = {
            False: _fit_lang_matrix(self.priors, np.array(_LANG_SHARES)),
            True: _fit_lang_matrix(self.priors, np.array(_LANG_SHARES_VOCAB_DRIFT)),
        }
        empty_tilt = np.array([_EMPTY_TILT.get(c, 1.0) for c in PRDTYPECODES])
        self.empty_tilt = empty_tilt / float(self.priors @ empty_tilt)
        self.desc_len_tilt = np.array([_DESC_LEN_TILT.get(c, 1.0) for c in PRDTYPECODES])
        self.desc_len_tilt /= float(np.exp(self.priors @ np.log(self.desc_len_tilt)))
        self.boiler_p = np.array([0.45 if c in _BOILERPLATE else 0.0 for c in PRDTYPECODES])
        # Mean token length (with separator) per language and source, for length targets.
        self.mean_tok = np.zeros((_N_SRC, n_lang))
        for li in range(n_lang):
            for src in range(_N_SRC):
                ln = [np.mean([len(w) for w in self.words[s:s + n]]) for s, n in
                      zip(self.pool_start[src, :, li], self.pool_size[src, :, li])]
                self.mean_tok[src, li] = float(np.mean(ln)) + (0.0 if LANGUAGES[li] == "ja"
                                                               else 1.0)

    def neighbour(self, cls: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A neighbouring class of each ``cls[i]``, chosen by its weight with uniform ``u[i]``."""
        slot = (u[:, None] > self.nb_cum[cls]).sum(axis=1)
        return self.nb_idx[cls, np.minimum(slot, self.nb_idx.shape[1] - 1)]


def _near_copy_title(title: str, lang: str, u: float) -> str:
    """The title of a product listed again: the same, or with a number, a word or the case
    changed (a second seller's spelling)."""
    if u < 0.4:
        return title
    if u < 0.65:
        m = re.search(r"\d+", title)
        if m:
            k = int(m.group(0))
            return title[:m.start()] + str(k + 1 + int(u * 7)) + title[m.end():]
        u = 0.9
    if u < 0.8:
        return title.upper() if not title.isupper() else title.capitalize()
    extra = _COPY_SUFFIX["fr" if lang == "fr" else "en"]
    return (title + " " + extra[int(u * 1000) % len(extra)])[:250]


def _fit_lang_matrix(priors: np.ndarray, target: np.ndarray) -> np.ndarray:
    """P(language | class) tilted per class, with marginal matching ``target``."""
    mat = np.tile(target, (len(PRDTYPECODES), 1))
    for ci, code in enumerate(PRDTYPECODES):
        for lang, f in _LANG_TILT.get(code, {}).items():
            mat[ci, LANGUAGES.index(lang)] *= f
    for _ in range(50):
        mat /= mat.sum(axis=1, keepdims=True)
        marginal = priors @ mat
        mat *= target / marginal
    return mat / mat.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=1)
def _compiled() -> _Compiled:
    return _Compiled()


# ---------------------------------------------------------------------------------------
# Generation helpers
# ---------------------------------------------------------------------------------------

def _quantile_sample(u: np.ndarray, knots: tuple[tuple[float, ...], tuple[float, ...]]
                     ) -> np.ndarray:
    """Map uniforms through a piecewise log-linear quantile function."""
    xs, ys = knots
    return np.exp(np.interp(u, xs, np.log(ys)))


def _draw_tokens(rng: np.random.Generator, comp: _Compiled, counts: np.ndarray,
                 mix: np.ndarray, vcls: np.ndarray, lang: np.ndarray) -> np.ndarray:
    """Draw ``counts[i]`` word indices for each row i; ``mix`` is (rows, sources)."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    cum = np.cumsum(mix, axis=1)
    cum /= cum[:, -1:]
    u = rng.random(total, dtype=np.float32)
    src = np.zeros(total, dtype=np.int64)
    for k in range(_N_SRC - 1):
        src += u > np.repeat(cum[:, k].astype(np.float32), counts)
    row_key = np.repeat(vcls * len(LANGUAGES) + lang, counts)
    key = src * (len(PRDTYPECODES) * len(LANGUAGES)) + row_key
    start = comp.pool_start.reshape(-1)[key]
    size = comp.pool_size.reshape(-1)[key]
    u2 = rng.random(total)
    pos = (size * u2 ** 1.6).astype(np.int64)  # Zipf-like: earlier words more frequent
    return start + pos


def _cut(text: str, target: int) -> str:
    """Truncate at the word boundary nearest to ``target`` characters."""
    if len(text) <= target:
        return text
    before = text.rfind(" ", 0, target + 1)
    after = text.find(" ", target)
    if after < 0:
        after = len(text)
    if before <= 0 or after - target < target - before:
        cut = after
    else:
        cut = before
    if cut > target + 25:  # one very long token (e.g. Japanese run): hard cut
        cut = target
    return text[:cut].rstrip(" ,")


def _format_attr(kind: str, lang: str, a: float, b: float, c: float) -> str:
    """Format one title attribute (sizes, volume numbers, model codes...)."""
    fr = lang == "fr"
    n = int(a * 1000)
    if kind == "tome":
        k = 1 + int(a * a * 40)
        return {"fr": f"Tome {k}", "de": f"Band {k}", "ja": f"第{k}巻"}.get(lang, f"Vol. {k}")
    if kind == "numero":
        k = 1 + int(a * a * 999)
        if fr:
            return f"N° {k}" if b < 0.6 else f"n°{k}"
        return f"No. {k}" if b < 0.5 else f"Issue {k}"
    if kind == "year":
        return str(1890 + int(a * 133)) if b < 0.5 else f"({1890 + int(a * 133)})"
    if kind == "edition":
        y = 1950 + int(a * 74)
        if b < 0.3:
            return "Édition Collector" if fr else "Collector's Edition"
        return f"Édition {y}" if fr else f"{y} Edition"
    if kind == "pages":
        return f"{40 + int(a * 900)} pages"
    if kind == "platform":
        plats = ("PS4", "PS3", "PS2", "Xbox 360", "Xbox One", "Nintendo Switch", "Wii U",
                 "Nintendo DS", "3DS", "PC", "Game Boy", "PS5")
        return plats[int(a * len(plats))]
    if kind == "pcplatform":
        return ("PC", "PC - Steam", "Windows", "PC/Mac", "Code de téléchargement" if fr
                else "Download Code")[int(a * 5)]
    if kind == "model":
        letters = "ABCDEFGHJKLMNPRSTUVWXZ"
        l1, l2 = letters[int(a * 22)], letters[int(b * 22)]
        num = 100 + int(c * 9900)
        if b < 0.35:
            return f"{l1}{l2}-{num}"
        if b < 0.6:
            return (f"Réf. {num}{l1}" if fr else f"Ref. {num}{l1}")
        if b < 0.8:
            return f"{l1}{l2}{num}"
        return f"{l1}{num}-{l2}{int(a * 90) + 10}"
    if kind == "dims":
        w, h = 10 + int(a * 190), 10 + int(b * 190)
        if c < 0.4:
            return f"{w}x{h} cm"
        if c < 0.7:
            return f"{w} x {h} x {5 + int(c * 100)} cm"
        return f"L{w} x H{h} cm"
    if kind == "height":
        return f"{5 + int(a * 30)} cm"
    if kind == "inch":
        d = 2.4 + int(a * 40) / 10
        return f"{d:.1f} pouces".replace(".", ",") if fr else f'{d:.1f}"'
    if kind == "mah":
        return f"{(3 + int(a * 50)) * 100} mAh" if b < 0.7 else f"{3.7 + int(b * 4) * 3.7:.1f}V"
    if kind == "scale":
        return ("1/10", "1/12", "1/16", "1/18", "1/24", "1/32", "1/35", "1/43", "1/72")[int(a * 9)]
    if kind == "age":
        if b < 0.3:
            return "0-6 mois" if fr else "0-6 months"
        k = 1 + int(a * 12)
        return f"{k} ans" if fr else f"{k}+ years"
    if kind == "players":
        lo, hi = 1 + int(a * 3), 4 + int(b * 6)
        return f"{lo}-{hi} joueurs" if fr else f"{lo}-{hi} players"
    if kind == "pcs":
        k = 2 + int(a * a * 98)
        if fr:
            return f"Lot de {k}" if b < 0.6 else f"{k} pcs"
        return f"{k} pcs" if lang != "de" else f"{k} Stück"
    if kind == "clothes":
        if b < 0.5:
            return ("Taille " if fr else "Size ") + ("XS", "S", "M", "L", "XL", "XXL")[int(a * 6)]
        return ("0-6 mois", "6-12 mois", "12-18 mois", "18-24 mois")[int(a * 4)] if fr else \
            ("0-6 months", "6-12 months", "12-18 months", "18-24 months")[int(a * 4)]
    if kind == "power":
        return f"{(1 + int(a * 40)) * 50} W" if b < 0.6 else f"{12 + int(a * 8) * 6}V"
    if kind == "volume":
        if b < 0.4:
            return f"{(1 + int(a * 20)) * 50} g"
        if b < 0.7:
            return f"{(1 + int(a * 10)) * 100} ml"
        return f"{1 + int(a * 5)} kg"
    if kind == "paper":
        return ("A4", "A5", "A6", "21x29,7 cm", "Format A5", "B5")[int(a * 6)]
    if kind == "pool":
        x1, x2, h = 2 + int(a * 6), 10 + int(b * 89), 60 + int(c * 70)
        return (f"{x1},{x2} x {h // 100},{h % 100:02d} m" if fr
                else f"{x1}.{x2} x {h // 100}.{h % 100:02d} m")
    if kind == "flow":
        return f"{(2 + int(a * 40)) * 100} L/h" if b < 0.5 else f"{1 + int(a * 14)} m3/h"
    if kind == "cardno":
        tot = 60 + int(b * 200)
        return f"{1 + int(a * tot)}/{tot}"
    return str(n)


def _htmlify(text: str, style: float, extras: list[str]) -> str:
    """Wrap plain description text in HTML markup."""
    sentences = [s for s in text.replace("\n", " ").split(". ") if s]
    if style < 0.45:
        paras, step = [], 3
        for i in range(0, len(sentences), step):
            chunk = ". ".join(sentences[i:i + step])
            paras.append(f"<p>{chunk}{'' if chunk.endswith('.') else '.'}</p>")
        out = "".join(paras)
    elif style < 0.75:
        out = ".<br />".join(sentences)
        if not out.endswith("."):
            out += "."
    else:
        head, *rest = sentences
        out = f"<b>{head}</b><br />" + ". ".join(rest)
    if extras:
        out += "<ul>" + "".join(f"<li>{e}</li>" for e in extras) + "</ul>"
    return out


def _mojibake(text: str) -> str:
    if text.isascii():
        cut = text.find(" ", len(text) // 2)
        return text + " Â· " if cut < 0 else text[:cut] + " Â·" + text[cut:]
    return text.encode("utf-8").decode("cp1252", errors="replace")


def _validate(rows: int, seed: int, drift: str, start_productid: int | None,
              rates: dict[str, float] | None = None) -> None:
    for name, rate in (rates or {}).items():
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) \
                or not 0.0 <= float(rate) <= 0.5:
            raise ValueError(f"{name} must be a share between 0 and 0.5, got {rate!r}")
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ValueError(f"rows must be a positive integer (>= 1), got {rows!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if drift not in DRIFT_KINDS:
        raise ValueError(
            f"unknown drift kind {drift!r}; allowed kinds: {', '.join(DRIFT_KINDS)}")
    if start_productid is not None and (
            isinstance(start_productid, bool)
            or not isinstance(start_productid, (int, np.integer)) or start_productid < 0):
        raise ValueError(
            f"start_productid must be None or a non-negative integer, got {start_productid!r}")


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------

def generate_products(rows: int, seed: int = 0, drift: str = "none",
                      start_productid: int | None = None, *,
                      label_noise: float = LABEL_NOISE, near_duplicates: float = NEAR_DUPLICATES,
                      generic_titles: float = GENERIC_TITLES,
                      provenance: bool = False) -> pd.DataFrame:
    """Generate ``rows`` synthetic products.

    Returns a DataFrame with columns ``designation, description, productid, imageid,
    prdtypecode`` (index 0..rows-1). ``description`` is ``""`` when empty. ``productid``
    (9-10 digits) and ``imageid`` (10 digits) are unique int64 values; with
    ``start_productid=None`` they are drawn from the seed (and drift kind), so different
    seeds give practically disjoint ids; otherwise productids increase from
    ``start_productid`` with small random gaps. ``drift`` is one of ``DRIFT_KINDS`` (see the
    module docstring). ``label_noise``, ``near_duplicates`` and ``generic_titles`` are the
    shares of products filed under a neighbouring code, (nearly) copying a product filed under
    a neighbouring code, and with a generic title (module docstring; 0 turns one off).
    ``provenance=True`` adds the columns ``content_code`` (the code whose product this row
    really is), ``duplicate_of`` (the row it copies, -1 if none) and ``generic_title``.
    Raises ``ValueError`` for ``rows < 1``, a negative seed, an unknown drift kind or a
    share outside [0, 0.5].
    """
    _validate(rows, seed, drift, start_productid,
              {"label_noise": label_noise, "near_duplicates": near_duplicates,
               "generic_titles": generic_titles})
    rows = int(rows)
    comp = _compiled()
    n_cls = len(PRDTYPECODES)
    # Independent streams per aspect, so a drift kind only changes what it targets.
    ss = np.random.SeedSequence([int(seed), 0x5EED])
    (r_cls, r_lang, r_noise, r_len, r_tok_t, r_tok_d, r_row, r_ids,
     r_fmt, r_line, r_dup, r_gen) = (np.random.default_rng(s) for s in ss.spawn(12))
    vocab_drift = drift == "vocabulary"
    length_drift = drift == "length"

    # Labels.
    priors = comp.drift_priors if drift == "classes" else comp.priors
    cls = r_cls.choice(n_cls, size=rows, p=priors)

    # Language per product (class-dependent).
    lang_mat = comp.lang_given_class[vocab_drift]
    cum_lang = np.cumsum(lang_mat, axis=1)[cls]
    lang = (r_lang.random(rows)[:, None] > cum_lang[:, :-1]).sum(axis=1)
    is_ja = lang == LANGUAGES.index("ja")

    # What each product really is (label noise: a neighbour's product filed under this
    # code; the label mix stays the real one) and weak products.
    noisy = r_noise.random(rows) < label_noise
    pick = r_noise.random(rows)
    vcls = np.where(noisy, comp.neighbour(cls, pick), cls)
    weak = r_noise.random(rows) < _WEAK_SHARE

    # Generic titles (no class words, no brand, line or attribute), some very short.
    ug = r_gen.random((rows, 3))
    generic = ug[:, 0] < generic_titles
    short = generic & (ug[:, 1] < _SHORT_OF_GENERIC)

    # Product lines: own class's, or a neighbour's (franchises cross classes); Zipf ranks.
    ul = r_line.random((rows, 5))
    line_cls = np.where(ul[:, 0] < _LINE_CROSS, comp.neighbour(vcls, ul[:, 1]), vcls)
    rank = np.minimum(np.searchsorted(comp.line_cdf, ul[:, 2]), _LINES_PER_CLASS - 1)
    line_id = line_cls * _LINES_PER_CLASS + rank
    line_t = (ul[:, 3] < _LINE_IN_TITLE) & ~generic
    line_d = line_t & (ul[:, 4] < _LINE_IN_DESC)

    # Lengths.
    title_len = _quantile_sample(r_len.random(rows), _TITLE_Q)
    u_empty = r_len.random(rows)
    desc_len = _quantile_sample(r_len.random(rows), _DESC_Q) * comp.desc_len_tilt[cls]
    empty_rate = 0.05 if length_drift else 0.35
    empty = u_empty < np.minimum(empty_rate * comp.empty_tilt[cls], 0.92)
    if length_drift:
        title_len = np.minimum(title_len * 2.5, 600.0)
        desc_len = desc_len * 2.5
    title_len = np.maximum(np.rint(title_len), 6).astype(np.int64)
    desc_len = np.where(empty, 0, np.maximum(np.rint(desc_len), 3)).astype(np.int64)

    # Per-row token source mixes.
    def mixes(base: np.ndarray, oov_share: float) -> np.ndarray:
        m = np.tile(base, (rows, 1))
        m[weak, _SRC_CLASS] *= _WEAK_FACTOR
        m[weak, _SRC_GENERIC] += base[_SRC_CLASS] * (1 - _WEAK_FACTOR) * 0.6
        m[weak, _SRC_GROUP] += base[_SRC_CLASS] * (1 - _WEAK_FACTOR) * 0.4
        if vocab_drift:
            # New products are described by new words: they take the place of content words
            # (generic, group, class), not of the language's function and filler words.
            m /= m.sum(axis=1, keepdims=True)
            content = m[:, [_SRC_GENERIC, _SRC_GROUP, _SRC_CLASS]]
            c = content.sum(axis=1, keepdims=True)
            m[:, [_SRC_GENERIC, _SRC_GROUP, _SRC_CLASS]] = content * (c - oov_share) / c
            m[:, _SRC_OOV] = oov_share
        return m

    mix_t = mixes(_TITLE_MIX, _OOV_TITLE)
    mix_d = mixes(_DESC_MIX, _OOV_DESC)
    mix_t[generic, _SRC_GROUP] = 0.0
    mix_t[generic, _SRC_CLASS] = 0.0
    mix_t[:, _SRC_FUNC] *= np.where(is_ja, 0.3, 1.0)
    exp_len_t = (mix_t / mix_t.sum(1, keepdims=True)) @ comp.mean_tok  # (rows, langs)
    exp_len_d = (mix_d / mix_d.sum(1, keepdims=True)) @ comp.mean_tok
    tok_len_t = exp_len_t[np.arange(rows), lang]
    tok_len_d = exp_len_d[np.arange(rows), lang]
    n_tok_t = (title_len / tok_len_t * 1.15).astype(np.int64) + 2
    n_tok_d = np.where(empty, 0, (desc_len / tok_len_d * 1.2).astype(np.int64) + 2)

    idx_t = _draw_tokens(r_tok_t, comp, n_tok_t, mix_t, vcls, lang)
    idx_d = _draw_tokens(r_tok_d, comp, n_tok_d, mix_d, vcls, lang)

    # Punctuation, capitalisation and quotes of description tokens: choose a spelling
    # variant per token (vectorised), see ``_Compiled.variants``.
    if len(idx_d):
        up = r_tok_d.random(len(idx_d))
        variant = np.where(up < 0.085, 1, np.where(up < 0.14, 2, 0))
        variant[(up >= 0.14) & (up < 0.1412)] = 6
        cap = np.zeros(len(idx_d), dtype=bool)
        cap[1:] = variant[:-1] == 1
        starts = np.concatenate([[0], np.cumsum(n_tok_d)[:-1]])
        cap[starts[n_tok_d > 0]] = True
        variant[cap & (variant < 3)] += 3
        words_d = comp.variants[variant * len(comp.words) + idx_d].tolist()
    else:
        words_d = []
    words_t = comp.words[idx_t].tolist()

    # Row-level decisions.
    ur = r_row.random((rows, 14))
    has_brand = ur[:, 0] < np.where(is_ja, 0.35, 0.5)
    drift_brand = vocab_drift & (ur[:, 1] < 0.5)
    n_attr = (ur[:, 2] < 0.7).astype(int) + (ur[:, 3] < 0.25).astype(int)
    title_upper = ur[:, 4] < 0.05
    nonempty = ~empty
    html = nonempty & (ur[:, 5] < 0.25)
    entity = nonempty & (ur[:, 6] < np.where(html, 0.9, 0.5))
    moji = (~entity) & (~is_ja) & np.where(nonempty, ur[:, 7] < 0.03, ur[:, 7] < 0.004)
    boiler = nonempty & (~is_ja) & (ur[:, 8] < comp.boiler_p[vcls])
    features = nonempty & (ur[:, 9] < 0.25)
    newline = nonempty & (~html) & (ur[:, 10] < 0.25)
    repeat_title = nonempty & (ur[:, 11] < 0.12)
    html_style = ur[:, 12]
    pick_u = ur[:, 13]
    uf = r_fmt.random((rows, 10)).tolist()
    has_brand &= ~generic
    n_attr = np.where(generic, 0, n_attr)
    (has_brand, drift_brand, n_attr, title_upper, html, entity, moji, boiler, features,
     newline, repeat_title, html_style, pick_u, short, line_t, line_d, short_u) = (
        np.asarray(a).tolist() for a in (
            has_brand, drift_brand, n_attr, title_upper, html, entity, moji, boiler,
            features, newline, repeat_title, html_style, pick_u, short, line_t, line_d,
            ug[:, 2]))
    line_names = comp.line_names
    line_l = line_id.tolist()

    titles: list[str] = []
    descs: list[str] = []
    t_off = np.concatenate([[0], np.cumsum(n_tok_t)]).tolist()
    d_off = np.concatenate([[0], np.cumsum(n_tok_d)]).tolist()
    lang_l = lang.tolist()
    vcls_l = vcls.tolist()
    tl_l = title_len.tolist()
    dl_l = desc_len.tolist()
    for i in range(rows):
        lg = LANGUAGES[lang_l[i]]
        sep = "" if lg == "ja" else " "
        v = vcls_l[i]
        f = uf[i]
        target = tl_l[i]
        # Title: [brand] content [attributes]
        brand = ""
        if has_brand[i]:
            if drift_brand[i]:
                bl = comp.drift_brands[v]
                brand = bl[int(f[0] * len(bl))]
            elif f[1] < 0.15:
                brand = _SHARED_BRANDS[int(f[0] * len(_SHARED_BRANDS))]
            else:
                bl = comp.brands[v]
                brand = bl[int(f[0] * len(bl))]
        attrs = []
        kinds = comp.attrs[v]
        for j in range(n_attr[i]):
            kind = kinds[int(f[2 + j] * len(kinds))]
            a = _format_attr(kind, lg, f[4 + j], f[6 + j], f[8])
            if a not in attrs:
                attrs.append(a)
        attr = " ".join(attrs)
        line = line_names[line_l[i]] if line_t[i] else ""
        room = target - len(brand) - len(attr) - len(line) - (1 if brand else 0) - \
            (1 if attr else 0) - (1 if line else 0)
        if room < 8 and target < 30:
            brand, attr, line = "", "", line if len(line) < target - 8 else ""
            room = target - len(line) - (1 if line else 0)
        if short[i]:
            opts = _SHORT_TITLES["fr" if lg == "fr" else "en"]
            title = opts[int(short_u[i] * len(opts))]
        else:
            content = _cut(sep.join(words_t[t_off[i]:t_off[i + 1]]), max(room, 4))
            content = content[:1].upper() + content[1:]
            title = " ".join(p for p in (brand, line, content, attr) if p)
        if title_upper[i]:
            title = title.upper()
        # Description.
        desc = ""
        if dl_l[i]:
            dtarget = dl_l[i]
            if entity[i]:  # entities lengthen the text: aim shorter so raw lengths match
                dtarget = int(dtarget / (1.14 if lg == "fr" else 1.03))
            extras: list[str] = []
            if features[i] and dtarget > 250:
                fl = "fr" if lg == "fr" else "en"
                lab = _FEATURE_LABELS[fl]
                extras = [
                    f"{lab[1]} {_format_attr('dims', fl, f[4], f[5], f[6])}",
                    f"{lab[2]} {_COLORS[fl][int(f[7] * len(_COLORS[fl]))]}",
                    f"{lab[3]} {_MATERIALS[fl][int(f[9] * len(_MATERIALS[fl]))]}",
                ]
                if brand:
                    extras.append(f"{lab[5]} {brand}")
                dtarget -= sum(len(e) + 3 for e in extras) + len(lab[0]) + 2
            pre = []
            if line_d[i] and dtarget > 3 * len(line):
                pre.append(line + ("。" if lg == "ja" else "."))
            if repeat_title[i] and dtarget > 3 * len(title):
                pre.append(title + ("。" if lg == "ja" else "."))
            if boiler[i]:
                bp = _BOILERPLATE[comp.codes[v]]
                opts = bp["fr"] if lg == "fr" else bp["en"]
                text = opts[int(pick_u[i] * len(opts))]
                if dtarget > len(text) + 60:
                    pre.append(text)
            head = " ".join(pre)
            body_target = max(dtarget - len(head) - 1, min(dtarget, 30))
            body = _cut(sep.join(words_d[d_off[i]:d_off[i + 1]]), body_target).rstrip(",、")
            if body and body[-1] not in ".。":
                body += "。" if lg == "ja" else "."
            desc = (head + " " + body) if head else body
            if html[i]:
                desc = _htmlify(desc, html_style[i], extras)
            else:
                if newline[i]:
                    desc = desc.replace(". ", ".\n", 3)
                if extras:
                    lab = _FEATURE_LABELS["fr" if lg == "fr" else "en"][0]
                    desc += "\n" + lab + "\n" + "\n".join("- " + e for e in extras)
            if entity[i]:
                enc = _encode_entities(desc)
                if enc == desc:
                    cut = desc.find(" ", len(desc) // 2)
                    enc = desc + " &amp;" if cut < 0 else desc[:cut] + " &amp;" + desc[cut:]
                desc = enc
            if moji[i]:
                desc = _mojibake(desc)
        elif moji[i]:
            title = _mojibake(title)
        titles.append(title[:250] if not length_drift else title[:600])
        descs.append(desc)

    # Near-duplicates: the same item listed again under a neighbouring code (another seller,
    # another category choice), its title and description copied or nearly so.
    content = vcls.copy()
    dup_of = np.full(rows, -1, dtype=np.int64)
    is_dup = r_dup.random(rows) < near_duplicates
    ud = r_dup.random((rows, 4))
    dup_rows = np.flatnonzero(is_dup)
    if len(dup_rows):
        src_pool = np.flatnonzero(~is_dup)
        by_cls = src_pool[np.argsort(cls[src_pool], kind="stable")]
        counts = np.bincount(cls[src_pool], minlength=n_cls)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        want = comp.neighbour(cls[dup_rows], ud[dup_rows, 0])
        ok = counts[want] > 0
        dup_rows, want = dup_rows[ok], want[ok]
        src = by_cls[starts[want] + (ud[dup_rows, 1] * counts[want]).astype(np.int64)]
        dup_of[dup_rows] = src
        content[dup_rows] = vcls[src]
        for i, j, a, b in zip(dup_rows.tolist(), src.tolist(), ud[dup_rows, 2].tolist(),
                              ud[dup_rows, 3].tolist()):
            titles[i] = _near_copy_title(titles[j], LANGUAGES[lang_l[j]], a)
            descs[i] = descs[j] if b < 0.65 else ("" if b < 0.85 else _cut(
                descs[j], max(len(descs[j]) // 2, 1)))

    # Ids.
    if start_productid is None:
        sub = np.random.default_rng(np.random.SeedSequence(
            [int(seed), DRIFT_KINDS.index(drift), 0x1D5]))
        productid = 100_000_000 + sub.choice(4_200_000_000, size=rows, replace=False)
    else:
        gaps = r_ids.integers(1, 40, size=rows)
        gaps[0] = 0
        productid = int(start_productid) + np.cumsum(gaps)
        sub = r_ids
    imageid = 1_000_000_000 + sub.choice(3_000_000_000, size=rows, replace=False)

    out = pd.DataFrame({
        "designation": titles,
        "description": descs,
        "productid": productid.astype(np.int64),
        "imageid": imageid.astype(np.int64),
        "prdtypecode": comp.codes[cls],
    })
    if provenance:
        out["content_code"] = comp.codes[content]
        out["duplicate_of"] = dup_of
        out["generic_title"] = generic & (dup_of < 0)
    return out


def write_catalogue(out_dir, rows: int, seed: int = 0, drift: str = "none", *,
                    label_noise: float = LABEL_NOISE, near_duplicates: float = NEAR_DUPLICATES,
                    generic_titles: float = GENERIC_TITLES) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``X_train_update.csv`` and ``Y_train_CVw08PX.csv`` in the real format.

    X: header ``,designation,description,productid,imageid``; Y: header ``,prdtypecode``;
    index 0..rows-1 in both, comma separated, quoted where needed, UTF-8. ``out_dir`` is
    created if missing. The rates are those of ``generate_products``. Returns
    ``(x_path, y_path)``.
    """
    df = generate_products(rows, seed=seed, drift=drift, label_noise=label_noise,
                           near_duplicates=near_duplicates, generic_titles=generic_titles)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_path = out / X_FILENAME
    y_path = out / Y_FILENAME
    df[["designation", "description", "productid", "imageid"]].to_csv(
        x_path, encoding="utf-8", lineterminator="\n")
    df[["prdtypecode"]].to_csv(y_path, encoding="utf-8", lineterminator="\n")
    return x_path, y_path
