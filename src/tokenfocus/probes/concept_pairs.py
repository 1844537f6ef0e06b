"""Hand-written counterfactual word pairs for the concept probe (``concepts.py``, spec C3).

Each concept maps a base word to its counterfactual (``("king", "queen")`` for male->female). The sets follow
the kinds in KihoPark/linear_rep_geometry ``word_pairs/`` (the files Liu et al. reuse) but are written here,
each word as in running text and without the leading space: ``single_token_pairs`` adds the prefix (" " by
default, as a word in running text is encoded by a byte-level BPE) and keeps only pairs where both sides are
one token. Words were chosen to be common; only unambiguous, correct pairs are listed (no contested capitals,
no capitals that are moving). French and Spanish words keep their accents; many of them are multi-token in an
English-centred vocabulary and are then dropped and reported, not guessed around (SmolLM2 keeps 33 of 46
English->French and 17 of 35 English->Spanish pairs, and no number->digit pair: it splits digits off the
leading space).
"""

from __future__ import annotations


def _pairs(text: str) -> list[tuple[str, str]]:
    """'a b, c d, ...' -> [("a", "b"), ("c", "d"), ...] (keeps the fixtures one readable line per group)."""
    out = []
    for item in text.replace("\n", " ").split(","):
        if item.strip():
            base, counterfactual = item.split()
            out.append((base, counterfactual))
    return out


CONCEPT_PAIRS: dict[str, list[tuple[str, str]]] = {
    "male->female": _pairs("""
        king queen, man woman, boy girl, father mother, son daughter, brother sister, husband wife, uncle aunt,
        nephew niece, prince princess, actor actress, he she, him her, gentleman lady, grandfather grandmother,
        grandson granddaughter, emperor empress, duke duchess, waiter waitress, hero heroine, god goddess,
        male female, men women, boys girls, kings queens, monk nun, groom bride, sir madam, dad mom,
        bull cow, boyfriend girlfriend, chairman chairwoman, spokesman spokeswoman, heir heiress,
        masculine feminine, widower widow, lad lass, stallion mare
    """),
    "singular->plural": _pairs("""
        cat cats, dog dogs, book books, car cars, house houses, tree trees, bird birds, city cities,
        child children, foot feet, tooth teeth, mouse mice, box boxes, day days, year years, hand hands,
        eye eyes, friend friends, game games, student students, school schools, country countries,
        family families, story stories, idea ideas, word words, place places, problem problems,
        question questions, thing things, name names, room rooms, door doors, table tables, window windows,
        song songs, horse horses, person people
    """),
    "verb->3pSg": _pairs("""
        go goes, make makes, take takes, see sees, come comes, know knows, get gets, give gives, find finds,
        think thinks, tell tells, become becomes, show shows, leave leaves, feel feels, bring brings,
        begin begins, keep keeps, hold holds, write writes, stand stands, hear hears, mean means, run runs,
        play plays, move moves, live lives, believe believes, happen happens, include includes, seem seems,
        help helps, talk talks, turn turns, start starts, want wants, need needs, use uses, work works,
        say says, do does, have has, look looks
    """),
    "verb->past": _pairs("""
        go went, make made, take took, see saw, come came, know knew, get got, give gave, find found,
        think thought, tell told, become became, show showed, feel felt, bring brought, begin began, keep kept,
        hold held, write wrote, stand stood, hear heard, run ran, play played, move moved, live lived,
        believe believed, happen happened, help helped, talk talked, turn turned, start started, want wanted,
        need needed, use used, work worked, say said, look looked, call called, try tried, ask asked, eat ate,
        drink drank, buy bought, sell sold, win won, lose lost, pay paid, meet met, speak spoke, sit sat
    """),
    "verb->ing": _pairs("""
        go going, make making, take taking, see seeing, come coming, get getting, give giving, find finding,
        think thinking, tell telling, show showing, feel feeling, bring bringing, keep keeping, hold holding,
        write writing, stand standing, run running, play playing, move moving, live living, help helping,
        talk talking, turn turning, start starting, work working, look looking, call calling, try trying,
        ask asking, eat eating, read reading, walk walking, sing singing, swim swimming, sleep sleeping,
        learn learning, build building
    """),
    "verb->agent": _pairs("""
        teach teacher, play player, write writer, read reader, sing singer, drive driver, run runner,
        work worker, lead leader, speak speaker, own owner, build builder, paint painter, farm farmer,
        report reporter, manage manager, design designer, develop developer, produce producer, bake baker,
        win winner, follow follower, listen listener, hunt hunter, kill killer, fight fighter, train trainer,
        dance dancer, swim swimmer, think thinker, publish publisher, employ employer, use user
    """),
    "verb->tion": _pairs("""
        create creation, educate education, inform information, invent invention, protect protection,
        connect connection, act action, direct direction, select selection, produce production,
        reduce reduction, introduce introduction, prepare preparation, celebrate celebration,
        organize organization, communicate communication, compete competition, describe description,
        operate operation, relate relation, collect collection, construct construction, correct correction,
        elect election, locate location, populate population, suggest suggestion, add addition
    """),
    "adj->comparative": _pairs("""
        big bigger, small smaller, fast faster, slow slower, high higher, low lower, long longer,
        short shorter, old older, young younger, new newer, large larger, strong stronger, weak weaker,
        hard harder, easy easier, good better, bad worse, great greater, cheap cheaper, rich richer,
        poor poorer, warm warmer, cold colder, hot hotter, deep deeper, wide wider, dark darker,
        bright brighter, clean cleaner, close closer, early earlier, late later, happy happier, heavy heavier,
        safe safer, smart smarter, tall taller, thick thicker, thin thinner
    """),
    "adj->superlative": _pairs("""
        big biggest, small smallest, fast fastest, slow slowest, high highest, low lowest, long longest,
        short shortest, old oldest, young youngest, new newest, large largest, strong strongest,
        weak weakest, hard hardest, easy easiest, good best, bad worst, great greatest, cheap cheapest,
        rich richest, poor poorest, warm warmest, cold coldest, hot hottest, deep deepest, wide widest,
        dark darkest, bright brightest, early earliest, late latest, happy happiest, heavy heaviest,
        safe safest, tall tallest
    """),
    "adj->adverb": _pairs("""
        quick quickly, slow slowly, careful carefully, easy easily, happy happily, sad sadly, real really,
        clear clearly, simple simply, recent recently, usual usually, final finally, actual actually,
        exact exactly, complete completely, direct directly, strong strongly, quiet quietly, loud loudly,
        nice nicely, bad badly, rapid rapidly, sudden suddenly, natural naturally, general generally,
        total totally, free freely, open openly, serious seriously, obvious obviously, certain certainly,
        typical typically, perfect perfectly, honest honestly, current currently, similar similarly,
        original originally, particular particularly
    """),
    "positive->negative": _pairs("""
        good bad, happy sad, love hate, right wrong, true false, best worst, better worse, success failure,
        win lose, beautiful ugly, friend enemy, healthy sick, safe dangerous, easy difficult,
        positive negative, clean dirty, kind cruel, honest dishonest, correct incorrect, legal illegal,
        fair unfair, pleasant unpleasant, smart stupid, peace war, hope fear, joy sorrow, gain loss,
        victory defeat, praise blame, hero villain, pleasure pain, wise foolish, calm angry
    """),
    "country->capital": _pairs("""
        France Paris, Germany Berlin, Italy Rome, Spain Madrid, Japan Tokyo, China Beijing, Russia Moscow,
        England London, Egypt Cairo, Greece Athens, Canada Ottawa, Australia Canberra, Ireland Dublin,
        Austria Vienna, Poland Warsaw, Portugal Lisbon, Norway Oslo, Sweden Stockholm, Finland Helsinki,
        Denmark Copenhagen, Hungary Budapest, Kenya Nairobi, Peru Lima, Cuba Havana, Thailand Bangkok,
        Iran Tehran, Iraq Baghdad, Syria Damascus, Turkey Ankara, Chile Santiago, Belgium Brussels,
        Netherlands Amsterdam, Switzerland Bern, Vietnam Hanoi, Philippines Manila, Colombia Bogota,
        Venezuela Caracas, Lebanon Beirut, Nigeria Abuja, Ghana Accra, Morocco Rabat, Afghanistan Kabul,
        Pakistan Islamabad, Scotland Edinburgh, Wales Cardiff, Romania Bucharest, Bulgaria Sofia,
        Serbia Belgrade, Croatia Zagreb, Nepal Kathmandu, Jamaica Kingston, Qatar Doha, Iceland Reykjavik
    """),
    "country->language": _pairs("""
        France French, Germany German, Italy Italian, Spain Spanish, Japan Japanese, China Chinese,
        Russia Russian, England English, Greece Greek, Portugal Portuguese, Poland Polish, Sweden Swedish,
        Norway Norwegian, Finland Finnish, Denmark Danish, Hungary Hungarian, Turkey Turkish, Korea Korean,
        Thailand Thai, Vietnam Vietnamese, Netherlands Dutch, Israel Hebrew, Brazil Portuguese,
        Mexico Spanish, Ukraine Ukrainian, Romania Romanian, Indonesia Indonesian, Wales Welsh,
        Pakistan Urdu, Bulgaria Bulgarian, Serbia Serbian, Croatia Croatian, Iceland Icelandic,
        Argentina Spanish, Austria German, Iran Persian
    """),
    "English->French": _pairs("""
        cat chat, day jour, bread pain, wine vin, green vert, big grand, good bon, sea mer, country pays,
        word mot, hand main, name nom, place lieu, thing chose, death mort, end fin, body corps, road route,
        gold or, iron fer, salt sel, and et, for pour, is est, not pas, more plus, who qui, of de, in dans,
        on sur, one un, seven sept, before avant, dog chien, house maison, man homme, woman femme, book livre,
        king roi, queen reine, world monde, life vie, school école, red rouge, black noir, white blanc
    """),
    "English->Spanish": _pairs("""
        sun sol, bread pan, black negro, sea mar, flower flor, salt sal, month mes, end fin, two dos,
        and y, with con, for para, is es, not no, without sin, of de, in en, dog perro, cat gato, house casa,
        water agua, man hombre, woman mujer, book libro, king rey, world mundo, life vida, father padre,
        mother madre, friend amigo, love amor, time tiempo, red rojo, white blanco, green verde
    """),
    "lower->upper": _pairs("""
        king King, city City, house House, new New, black Black, white White, green Green, red Red,
        blue Blue, time Time, world World, life Life, man Man, water Water, love Love, day Day, night Night,
        sun Sun, book Book, school School, church Church, river River, lake Lake, mountain Mountain,
        north North, south South, east East, west West, good Good, great Great, little Little, old Old,
        young Young, street Street, park Park, art Art, music Music, game Game, star Star, power Power,
        home Home, family Family
    """),
    "number->digit": _pairs("""
        zero 0, one 1, two 2, three 3, four 4, five 5, six 6, seven 7, eight 8, nine 9, ten 10, eleven 11,
        twelve 12, twenty 20, thirty 30, fifty 50, hundred 100
    """),
    "pronoun->possessive": _pairs("""
        I my, you your, he his, she her, we our, they their, it its
    """),
}
"""Concept name -> [(base word, counterfactual word)], each word as it is written in running text (lower case
except proper nouns, "I", and the upper-case side of lower->upper)."""
