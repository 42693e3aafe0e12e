"""Words of the synthetic world: title templates and search queries per category (Thai + English).

Indexed by category code (the order of gpu_core.schema.CATEGORIES). Titles are
``brand + noun + adjective`` in English (``"Uniqlo denim jacket size M"``) or Thai word order
(``"iPhone 12 มือสอง สภาพดี"``).
"""

from __future__ import annotations

from gpu_core.schema import CATEGORIES

# category -> (brands, English nouns, Thai nouns)
TITLE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "fashion": (
        ("Uniqlo", "Zara", "Levi's", "H&M", "Nike", "Vintage", "Muji", "Gucci"),
        ("denim jacket", "t-shirt", "dress", "winter coat", "sneakers", "handbag", "jeans", "hoodie"),
        ("เสื้อยืด", "กางเกงยีนส์", "เดรส", "เสื้อกันหนาว", "รองเท้าผ้าใบ", "กระเป๋าถือ", "เสื้อแจ็คเก็ต"),
    ),
    "electronics": (
        ("Sony", "Samsung", "LG", "Canon", "JBL", "Apple", "Xiaomi", "Asus"),
        ("headphones", "laptop", "camera", "bluetooth speaker", "monitor", "tablet", "smart TV"),
        ("หูฟัง", "โน้ตบุ๊ค", "กล้องถ่ายรูป", "ลำโพงบลูทูธ", "จอมอนิเตอร์", "แท็บเล็ต", "ทีวี"),
    ),
    "mobile_phones": (
        ("iPhone 12", "iPhone 13", "iPhone 14", "Samsung Galaxy S21", "Oppo Reno", "Vivo V25", "Xiaomi 13"),
        ("phone", "smartphone", "128GB", "256GB", "phone case", "charger"),
        ("มือถือ", "โทรศัพท์", "เคสมือถือ", "ที่ชาร์จ"),
    ),
    "home_garden": (
        ("IKEA", "Index", "HomePro", "Philips", "Tefal", "Handmade"),
        ("rice cooker", "plant pot", "lamp", "blender", "garden hose", "curtains", "fan"),
        ("หม้อหุงข้าว", "กระถางต้นไม้", "โคมไฟ", "เครื่องปั่น", "ผ้าม่าน", "พัดลม"),
    ),
    "baby_kids": (
        ("Lego", "Fisher-Price", "Pigeon", "Chicco", "Disney", "Mothercare"),
        ("stroller", "toy set", "baby clothes", "car seat", "baby bottle", "kids bike"),
        ("รถเข็นเด็ก", "ของเล่น", "เสื้อผ้าเด็ก", "คาร์ซีท", "ขวดนม", "จักรยานเด็ก"),
    ),
    "sports": (
        ("Nike", "Adidas", "Yonex", "Decathlon", "Garmin", "Asics", "Wilson"),
        ("running shoes", "badminton racket", "yoga mat", "football", "dumbbells", "bicycle", "watch"),
        ("รองเท้าวิ่ง", "ไม้แบด", "เสื่อโยคะ", "ลูกฟุตบอล", "ดัมเบล", "จักรยาน"),
    ),
    "books_hobbies": (
        ("Nanmeebooks", "Penguin", "Bandai", "Yamaha", "Fender", "Taiyo"),
        ("novel", "manga set", "guitar", "board game", "model kit", "textbook", "ukulele"),
        ("หนังสือ", "การ์ตูน", "กีตาร์", "บอร์ดเกม", "โมเดล", "นิยาย"),
    ),
    "vehicles_parts": (
        ("Honda", "Yamaha", "Toyota", "Michelin", "Bosch", "Shell"),
        ("motorbike helmet", "car tyre", "wheel rim", "engine oil", "side mirror", "scooter"),
        ("หมวกกันน็อค", "ยางรถยนต์", "ล้อแม็ก", "น้ำมันเครื่อง", "กระจกมองข้าง", "มอเตอร์ไซค์"),
    ),
    "beauty": (
        ("Mistine", "L'Oreal", "Maybelline", "Shiseido", "Dior", "Srichand", "Innisfree"),
        ("lipstick", "perfume", "serum", "foundation", "sunscreen", "hair dryer"),
        ("ลิปสติก", "น้ำหอม", "เซรั่ม", "รองพื้น", "ครีมกันแดด", "ไดร์เป่าผม"),
    ),
    "pets": (
        ("Royal Canin", "Pedigree", "Whiskas", "Me-O", "Petsmart", "Handmade"),
        ("cat tree", "dog bed", "pet carrier", "aquarium", "leash", "cat litter box"),
        ("คอนโดแมว", "ที่นอนสุนัข", "กระเป๋าสัตว์เลี้ยง", "ตู้ปลา", "สายจูง", "กระบะทรายแมว"),
    ),
    "collectibles": (
        ("Pop Mart", "Art Toy", "Funko", "Hot Toys", "Pokemon", "Antique"),
        ("figure", "amulet", "trading cards", "vinyl record", "coin set", "stamp album"),
        ("ฟิกเกอร์", "พระเครื่อง", "การ์ดสะสม", "แผ่นเสียง", "เหรียญสะสม", "แสตมป์"),
    ),
    "furniture": (
        ("IKEA", "Index Living", "SB Design", "Koncept", "Teak", "Modernform"),
        ("sofa", "dining table", "office chair", "wardrobe", "bookshelf", "bed frame"),
        ("โซฟา", "โต๊ะกินข้าว", "เก้าอี้ทำงาน", "ตู้เสื้อผ้า", "ชั้นวางหนังสือ", "เตียง"),
    ),
}

EN_ADJECTIVES: tuple[str, ...] = (
    "second hand",
    "like new",
    "used",
    "good condition",
    "barely used",
    "original",
    "size M",
    "for sale",
)
TH_ADJECTIVES: tuple[str, ...] = ("มือสอง", "สภาพดี", "เหมือนใหม่", "ของแท้", "ราคาถูก", "ใช้งานได้ปกติ", "ส่งฟรี")

# Seasonal words only searched during a drift surge (titles may still contain them).
SEASONAL: frozenset[str] = frozenset({"winter coat", "เสื้อกันหนาว"})
# Search queries per category (a mix of Thai and English keywords).
QUERIES: dict[str, tuple[str, ...]] = {
    cat: tuple(q for q in dict.fromkeys(en[:5] + th[:5] + brands[:2]) if q not in SEASONAL)
    for cat, (brands, en, th) in TITLE_WORDS.items()
}
# Queries of a drift surge (the category suddenly in demand); fashion gets winter coats.
DRIFT_QUERIES: dict[str, tuple[str, ...]] = {cat: q[:3] for cat, q in QUERIES.items()}
DRIFT_QUERIES["fashion"] = ("winter coat", "เสื้อกันหนาว", "jacket", "เสื้อแจ็คเก็ต", "hoodie")

assert tuple(TITLE_WORDS) == CATEGORIES, "lexicon must follow CATEGORIES order"
