"""Synthetic Rakuten France catalogue generator.

The real challenge data (``X_train_update.csv`` / ``Y_train_CVw08PX.csv``) may not be
redistributed, so tests, demos and drift drills run on a synthetic catalogue that mimics
its published statistics (see ``/work/shared/DATA_FACTS.md``):

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
  Japanese equivalents). A quarter of the products are "weak" (few class words), and a
  few percent are written with a sibling class's vocabulary (label noise, as in real
  catalogues), so a TF-IDF + linear model lands around 0.85 weighted F1, not ~1.0.

Drift kinds (``DRIFT_KINDS``), for exercising a drift monitor:

* ``"none"``: the reference distribution above.
* ``"vocabulary"``: a different vocabulary: ~25-30% of content tokens come from
  out-of-vocabulary words (invented product words and new brands that never occur in
  ``"none"`` data), and the language mix moves to ~30% French, 40% English, 12% German,
  12% Japanese, 6% Spanish/Italian.
* ``"length"``: texts get **longer**: titles and non-empty descriptions are ~2.5x longer
  (titles capped at 600 characters instead of 250) and only ~5% of descriptions are empty.
* ``"classes"``: class priors strongly shifted: four normally small classes (60, 1301,
  2905, 1940) make up ~80% of rows, ten others share the remaining ~20%, and the other
  13 classes (including the usual majority class 2583) vanish.

Everything not targeted by the drift kind keeps its ``"none"`` distribution (conditional
on the class). Output is fully determined by ``(rows, seed, drift, start_productid)``.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np
import pandas as pd

from mlops_cli.categories import CLASS_COUNTS, PRDTYPECODES

__all__ = ["DRIFT_KINDS", "LANGUAGES", "generate_products", "write_catalogue"]

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
_DRIFT_DOMINANT = {60: 0.25, 1301: 0.20, 2905: 0.20, 1940: 0.15}
_DRIFT_MINOR = (10, 40, 50, 1180, 2220, 2280, 2462, 1320, 1302, 1281)

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
_NOISE_SHARE = 0.07      # products written with a sibling class's vocabulary
_OOV_TITLE, _OOV_DESC = 0.30, 0.25   # out-of-vocabulary token share under vocabulary drift

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
                    _SRC_OOV: oov[lang],
                }
                for src, pool in pools.items():
                    self.pool_start[src, ci, li], self.pool_size[src, ci, li] = add(pool)
        self.words = np.array(words, dtype=object)
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
        self.group_members: list[np.ndarray] = []
        for code in PRDTYPECODES:
            sib = [self.code_index[c] for c in PRDTYPECODES
                   if _GROUP_OF[c] == _GROUP_OF[code] and c != code]
            if not sib:  # standalone class: noise borrows any other class
                sib = [self.code_index[c] for c in PRDTYPECODES if c != code]
            self.group_members.append(np.array(sib, dtype=np.int64))
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


def _validate(rows: int, seed: int, drift: str, start_productid: int | None) -> None:
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
                      start_productid: int | None = None) -> pd.DataFrame:
    """Generate ``rows`` synthetic products.

    Returns a DataFrame with columns ``designation, description, productid, imageid,
    prdtypecode`` (index 0..rows-1). ``description`` is ``""`` when empty. ``productid``
    (9-10 digits) and ``imageid`` (10 digits) are unique int64 values; with
    ``start_productid=None`` they are drawn from the seed (and drift kind), so different
    seeds give practically disjoint ids; otherwise productids increase from
    ``start_productid`` with small random gaps. ``drift`` is one of ``DRIFT_KINDS`` (see the
    module docstring). Raises ``ValueError`` for ``rows < 1``, a negative seed or an
    unknown drift kind.
    """
    _validate(rows, seed, drift, start_productid)
    rows = int(rows)
    comp = _compiled()
    n_cls = len(PRDTYPECODES)
    # Independent streams per aspect, so a drift kind only changes what it targets.
    ss = np.random.SeedSequence([int(seed), 0x5EED])
    (r_cls, r_lang, r_noise, r_len, r_tok_t, r_tok_d, r_row, r_ids,
     r_fmt) = (np.random.default_rng(s) for s in ss.spawn(9))
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

    # Vocabulary class (label noise) and weak products.
    vcls = cls.copy()
    noisy = r_noise.random(rows) < _NOISE_SHARE
    pick = r_noise.random(rows)
    for i in np.flatnonzero(noisy):
        sib = comp.group_members[cls[i]]
        vcls[i] = sib[int(pick[i] * len(sib))]
    weak = r_noise.random(rows) < _WEAK_SHARE

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
            m *= (1 - oov_share) / m.sum(axis=1, keepdims=True)
            m[:, _SRC_OOV] = oov_share
        return m

    mix_t = mixes(_TITLE_MIX, _OOV_TITLE)
    mix_d = mixes(_DESC_MIX, _OOV_DESC)
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
    (has_brand, drift_brand, n_attr, title_upper, html, entity, moji, boiler, features,
     newline, repeat_title, html_style, pick_u) = (
        np.asarray(a).tolist() for a in (
            has_brand, drift_brand, n_attr, title_upper, html, entity, moji, boiler,
            features, newline, repeat_title, html_style, pick_u))

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
                brand = _DRIFT_BRANDS[int(f[0] * len(_DRIFT_BRANDS))]
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
        room = target - len(brand) - len(attr) - (1 if brand else 0) - (1 if attr else 0)
        if room < 8 and target < 30:
            brand, attr = "", ""
            room = target
        content = _cut(sep.join(words_t[t_off[i]:t_off[i + 1]]), max(room, 4))
        content = content[:1].upper() + content[1:]
        title = " ".join(p for p in (brand, content, attr) if p)
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

    return pd.DataFrame({
        "designation": titles,
        "description": descs,
        "productid": productid.astype(np.int64),
        "imageid": imageid.astype(np.int64),
        "prdtypecode": comp.codes[cls],
    })


def write_catalogue(out_dir, rows: int, seed: int = 0, drift: str = "none"
                    ) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``X_train_update.csv`` and ``Y_train_CVw08PX.csv`` in the real format.

    X: header ``,designation,description,productid,imageid``; Y: header ``,prdtypecode``;
    index 0..rows-1 in both, comma separated, quoted where needed, UTF-8. ``out_dir`` is
    created if missing. Returns ``(x_path, y_path)``.
    """
    df = generate_products(rows, seed=seed, drift=drift)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_path = out / X_FILENAME
    y_path = out / Y_FILENAME
    df[["designation", "description", "productid", "imageid"]].to_csv(
        x_path, encoding="utf-8", lineterminator="\n")
    df[["prdtypecode"]].to_csv(y_path, encoding="utf-8", lineterminator="\n")
    return x_path, y_path
