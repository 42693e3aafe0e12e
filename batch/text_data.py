"""Labelled text-safety set for the classifier heads: templates x lexicons, Thai, English and mixed.

Deterministic (seeded): ``generate()`` always returns the same rows, and the shipped file
``batch/data/text_safety.jsonl`` is exactly ``write_dataset()``'s output (a test checks this).
Each row: ``{"id", "text", "labels": [...], "lang": th|en|mixed, "context": listing|chat, "split": train|test}``.
The held-out split uses lexicon entries (items, insults, contact handles) never seen in training, so
precision/recall on it measure generalisation to unseen words, not memorised templates.
Class names come from ``engines.text.heads.CLASSES``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from engines.text.heads import CLASSES, DIVERSION, OFFENSIVE, OK

DATA_PATH = Path(__file__).resolve().parent / "data" / "text_safety.jsonl"
SEED = 20240607
HELD_OUT_SHARE = 0.25

# --- lexicons: (thai, english) pairs; either may be None -------------------------------------------------
OK_ITEMS = [
    ("ไอโฟน 13 128GB", "iPhone 13 128GB"), ("กระเป๋าผ้า", "canvas tote bag"), ("รองเท้าผ้าใบ Nike", "Nike sneakers"),
    ("โต๊ะไม้สัก", "teak wood table"), ("เก้าอี้สำนักงาน", "office chair"), ("จักรยานเสือภูเขา", "mountain bike"),
    ("หม้อทอดไร้น้ำมัน", "air fryer"), ("พัดลมตั้งพื้น", "standing fan"), ("ตู้เย็น 2 ประตู", "two-door fridge"),
    ("หนังสือเรียนมือสอง", "used textbooks"), ("กล้อง Canon EOS", "Canon EOS camera"), ("โน้ตบุ๊ก Acer", "Acer laptop"),
    ("หูฟังบลูทูธ", "bluetooth headphones"), ("นาฬิกา Casio", "Casio watch"), ("ตุ๊กตาหมี", "teddy bear"),
    ("ของเล่นเด็ก", "kids toys"), ("เสื้อยืดวินเทจ", "vintage t-shirt"), ("กางเกงยีนส์ Levi's", "Levi's jeans"),
    ("เครื่องซักผ้า", "washing machine"), ("ทีวี 55 นิ้ว", "55 inch TV"), ("เครื่อง PS5", "PS5 console"),
    ("Nintendo Switch", "Nintendo Switch"), ("หม้อหุงข้าว", "rice cooker"), ("รถเข็นเด็ก", "baby stroller"),
    ("กีตาร์โปร่ง", "acoustic guitar"), ("ปืนกาวร้อน", "hot glue gun"), ("ปืนฉีดน้ำของเล่น", "toy water gun"),
    ("ปืนนวดกล้ามเนื้อ", "massage gun"), ("ปืนยิงตะปูลม", "pneumatic nail gun"), ("ยาสีฟันสมุนไพร", "herbal toothpaste"),
    ("ยาดมสมุนไพร", "herbal inhaler"), ("ช้างไม้แกะสลัก", "carved wooden elephant"), ("เสื้อลายเสือ", "tiger print shirt"),
    ("พระเครื่อง", "Thai amulet"), ("วิตามินซี", "vitamin C tablets"), ("ชุดมีดทำครัว", "kitchen knife set"),
    ("เครื่องเป่าลมร้อน", "heat gun"), ("ฟิล์มกันรอย", "screen protector"), ("กระเป๋าหนังแท้", "genuine leather bag"),
    ("ปลากัด", "betta fish"), ("กรงนก", "bird cage"), ("ลูกแมวเปอร์เซีย", "persian kitten"),
    ("สายชาร์จไลน์นิ่ง", "lightning cable"), ("แบตสำรอง", "power bank"), ("ไม้เทนนิส", "tennis racket"),
    ("ชุดนักเรียน", "school uniform"), ("กะปิระยอง", "shrimp paste"), ("เตารีดไอน้ำ", "steam iron"),
    ("โทรศัพท์บ้าน", "landline phone"), ("ซิมการ์ดเติมเงิน", "prepaid SIM card"), ("เครื่องพิมพ์", "printer"),
    ("มอเตอร์ไซค์ Honda Wave", "Honda Wave motorbike"), ("หมวกกันน็อก", "motorcycle helmet"), ("เต็นท์แคมป์ปิ้ง", "camping tent"),
    ("ปืนยิงซิลิโคน", "silicone caulking gun"), ("ปืนพ่นสี", "paint spray gun"), ("ปืนฉีดโฟมล้างรถ", "foam cannon car wash"),
    ("ปืนเนิร์ฟของเล่น", "Nerf toy blaster"), ("ยาแก้ปวดพาราเซตามอล", "paracetamol pain relief"), ("ยาหม่อง", "herbal balm"),
    ("ตุ๊กตาช้าง", "elephant plush toy"), ("โมเดลเสือ", "tiger figurine"), ("กระเป๋าแบรนด์แท้มีใบเสร็จ", "authentic designer bag with receipt"),
    ("เครื่องพ่นไอน้ำอโรมา", "aroma diffuser"), ("ไฟแช็กซิปโป้", "Zippo lighter"),
    ("เสื้อกันหนาว", "winter jacket"), ("ลำโพง JBL", "JBL speaker"), ("แว่นกันแดด Ray-Ban แท้", "genuine Ray-Ban sunglasses"),
    # look-alikes of the newer classes: tableware, merchandise, services and goods that are legal to sell
    ("ชุดแก้วทรงสูง", "highball glass set"), ("ที่เปิดขวดสแตนเลส", "stainless bottle opener"),
    ("ตู้เย็นมินิบาร์", "minibar fridge"), ("ไฟแช็กแก๊ส", "gas lighter"), ("ที่เขี่ยบุหรี่แก้ว", "glass ashtray"),
    ("บอร์ดเกมครอบครัว", "family board game"), ("ลูกเต๋าไม้", "wooden dice"), ("ชุดชั้นในผ้าฝ้าย", "cotton underwear set"),
    ("ชุดว่ายน้ำเด็ก", "kids swimsuit"), ("น้ำมันนวดตัว", "body massage oil"), ("วิตามินรวม", "multivitamin"),
    ("ยาดมตราโป๊ยเซียน", "herbal nasal inhaler"), ("พลาสเตอร์ปิดแผล", "adhesive bandages"), ("ปรอทวัดไข้", "thermometer"),
    ("เกมกระดานหมากรุก", "chess set"), ("แก้วกาแฟเซรามิก", "ceramic coffee mug"), ("ชุดปริ้นท์นามบัตร", "business card printing"),
    ("สีทาบ้านโทนงาช้าง", "ivory wall paint"), ("เสื้อยืดโลโก้แบรนด์เบียร์", "beer brand logo t-shirt"),
    ("ใบกระท่อมสด", None),
]
PROHIBITED = {
    "weapon": [
        ("ปืนพก", "handgun"), ("ปืนสั้น 9 มม.", "9mm pistol"), ("ปืนไรเฟิล", "hunting rifle"), ("กระสุนปืน", "ammunition"),
        ("ลูกซอง", "shotgun shells"), ("ปืนไทยประดิษฐ์", "homemade gun"), ("ระเบิดมือ", "hand grenade"),
        ("ปืนช็อตไฟฟ้า", "taser"), ("สนับมือเหล็ก", "brass knuckles"), ("ท่อเก็บเสียงปืน", "gun silencer"),
        ("ปืนกล็อก", "Glock pistol"), ("ปืน AK-47", "AK-47 rifle"), ("ปืนลูกโม่", "revolver"), ("แม็กกาซีนปืน", "gun magazine"),
        ("ดินปืน", "gunpowder"), ("ปืนอัดลมแรงสูง", "high power air rifle"),
    ],
    "drug": [
        ("ยาบ้า", "yaba pills"), ("ยาไอซ์", "crystal meth"), ("เฮโรอีน", "heroin"), ("โคเคน", "cocaine"),
        ("ยาอี", "ecstasy pills"), ("ยาเค", "ketamine"), ("กัญชาอัดแท่ง", "compressed weed"), ("ยาเสียสาว", "date rape drug"),
        ("ต้นกัญชาด่าง", "cannabis plant"), ("ยาเสพติด", "narcotics"),
        ("เห็ดเมา", "magic mushrooms"), ("ฝิ่น", "opium"), ("แอลเอสดี", "LSD tabs"), ("น้ำกระท่อมผสมยาแก้ไอ", "lean cough syrup"),
        ("ดอกกัญชาอบแห้ง", "dried cannabis buds"), ("ยาไอซ์เกล็ด", "ice crystals meth"),
    ],
    "prescription_medicine": [
        ("ยานอนหลับไม่ต้องใช้ใบสั่งแพทย์", "sleeping pills without prescription"),
        ("ยาลดน้ำหนักไซบูทรามีน", "sibutramine diet pills"), ("ยาแก้ปวดทรามาดอล", "tramadol"),
        ("ยาไวอากร้า", "viagra tablets"), ("ยาปฏิชีวนะ", "antibiotics without prescription"), ("ยาคุมกำเนิด", "birth control pills"),
        ("ยาฉีดลดน้ำหนัก", "weight loss injection pen"), ("ยารักษาสิวไอโซเตรติโนอิน", "isotretinoin acne pills"),
        ("โบท็อกซ์ฉีดเอง", "botox vials"), ("สเตียรอยด์ฉีด", "anabolic steroid injection"),
    ],
    "alcohol": [
        ("เหล้าขาว", "rice whisky"), ("เบียร์ยกลัง", "case of beer"), ("ไวน์แดงนำเข้า", "imported red wine"),
        ("วิสกี้ 18 ปี", "18 year old whisky"), ("วอดก้า", "vodka"), ("สาโทหมักเอง", "homemade rice wine"),
        ("โซจูเกาหลี", "korean soju"), ("เหล้ายาดอง", "herbal liquor"), ("แชมเปญ", "champagne bottle"),
    ],
    "tobacco": [
        ("บุหรี่ซอง", "pack of cigarettes"), ("บุหรี่นอกยกคอตตอน", "carton of imported cigarettes"),
        ("ยาเส้นมวนเอง", "rolling tobacco"), ("ซิการ์คิวบา", "cuban cigars"), ("บารากู่", "shisha hookah tobacco"),
        ("บุหรี่หนีภาษี", "smuggled cigarettes"), ("ใบยาสูบ", "tobacco leaves"), ("ถุงนิโคติน", "nicotine pouches"),
    ],
    "gambling": [
        ("เว็บบาคาร่า", "baccarat website"), ("สล็อตออนไลน์", "online slots"), ("รับแทงบอล", "football betting"),
        ("หวยใต้ดิน", "underground lottery"), ("เว็บพนันเครดิตฟรี", "casino free credit"), ("แทงมวยออนไลน์", "muay thai betting"),
        ("ยูสเซอร์เว็บพนัน", "betting account"), ("ไฮโลออนไลน์", "online dice betting"), ("คาสิโนออนไลน์", "online casino"),
    ],
    "adult": [
        ("คลิปหลุด", "leaked sex clips"), ("หนังโป๊", "porn dvds"), ("ของเล่นผู้ใหญ่", "sex toys"), ("ไข่สั่น", "vibrator"),
        ("ตุ๊กตายาง", "sex doll"), ("น้องรับงาน", "escort girls"), ("คลิปแอบถ่าย", "hidden camera videos"),
        ("รูปโป๊", "nude photos"), ("ไซด์ไลน์", "sideline girls"),
    ],
    "counterfeit": [
        ("กระเป๋าแบรนด์เนมเกรดมิลเลอร์", "mirror grade designer bag"), ("นาฬิกา Rolex ก๊อปเกรดเอ", "replica Rolex"),
        ("รองเท้าก๊อปเหมือนแท้", "fake sneakers"), ("ของเลียนแบบแบรนด์ดัง", "knockoff brand goods"),
        ("กระเป๋า LV งานก๊อป", "fake Louis Vuitton bag"), ("แบงก์ปลอม", "counterfeit banknotes"),
        ("เสื้อ Gucci เกรดก๊อป", "copy Gucci shirt"), ("ไอโฟนก๊อป", "clone iPhone"), ("น้ำหอมเทสเตอร์ปลอม", "fake perfume"),
        ("แว่น Ray-Ban ก๊อป", "fake Ray-Ban"), ("รองเท้า Jordan เกรดมิลเลอร์", "AAA replica Jordans"),
        ("กระเป๋า Hermes ก๊อปหนังแท้", "Hermes replica bag"), ("เครื่องสำอางปลอม", "counterfeit cosmetics"),
        ("แผ่นเกมก๊อป", "pirated game discs"),
    ],
    "wildlife": [
        ("งาช้าง", "elephant ivory"), ("นอแรด", "rhino horn"), ("เกล็ดตัวนิ่ม", "pangolin scales"), ("เต่าดาว", "star tortoise"),
        ("ลูกเสือโคร่ง", "tiger cub"), ("หนังเสือ", "tiger skin"), ("ลิงลม", "slow loris"), ("ชะนี", "baby gibbon"),
        ("นกเงือก", "hornbill"), ("เขี้ยวเสือ", "tiger fang"), ("ดีหมี", "bear bile"), ("กระดองเต่ากระ", "hawksbill shell"),
        ("ลูกนากป่า", "wild otter pup"), ("นกแก้วป่า", "wild-caught parrot"),
    ],
    "vape": [
        ("บุหรี่ไฟฟ้า", "e-cigarette"), ("พอตไฟฟ้า", "vape pod"), ("น้ำยาพอต", "vape juice"), ("หัวพอต", "pod cartridge"),
        ("พอตใช้แล้วทิ้ง", "disposable vape"), ("น้ำยาบุหรี่ไฟฟ้าซอลต์นิค", "nicotine salt e-liquid"),
        ("บุหรี่ไฟฟ้า Relx", "Relx vape"), ("ไอคอสพร้อมแท่งยาสูบ", "IQOS with heets"), ("บารากู่ไฟฟ้า", "electronic hookah"),
        ("มอดบุหรี่ไฟฟ้า", "vape mod"),
    ],
    "fake_document": [
        ("บัตรประชาชนปลอม", "fake ID card"), ("ใบขับขี่ปลอม", "fake driving license"), ("รับทำวุฒิการศึกษา", "fake diploma"),
        ("ปริญญาบัตรปลอม", "fake degree certificate"), ("พาสปอร์ตปลอม", "forged passport"), ("สลิปโอนเงินปลอม", "fake bank slip"),
        ("ใบรับรองแพทย์ปลอม", "fake medical certificate"), ("ทะเบียนรถปลอม", "fake vehicle registration"),
        ("ขายบัญชีธนาคารม้า", "mule bank accounts for sale"), ("เอกสารวีซ่าปลอม", "forged visa documents"),
        ("ใบเสร็จปลอม", "fake receipts"),
    ],
}
INSULTS = [
    ("ไอ้ควาย", "you stupid idiot"), ("ไอ้เหี้ย", "you piece of shit"), ("อีดอกทอง", "you bitch"), ("ไอ้สัส", "asshole"),
    ("มึงโง่", "you moron"), ("ไปตายซะ", "go to hell"), ("ไอ้ชาติหมา", "you dog"), ("อีตอแหล", "lying bitch"),
    ("ไอ้เวร", "bastard"), ("ระยำ", "damn scumbag"), ("ไอ้บ้า", "you lunatic"), ("หน้าโง่", "dumbass"),
    ("ชิบหาย", "fucking hell"), ("ไอ้สัตว์", "you animal"), ("อีเหี้ย", "fucking bitch"), ("ควายจริงๆ", "retard"),
    ("เสือกไม่เข้าเรื่อง", "mind your own fucking business"), ("ไอ้ขี้โกง", "scumbag cheater"),
]
OFFENSIVE_T = {
    "th": ["{insult} ตอบช้าจัง", "ของห่วยแบบนี้ยังกล้าขาย {insult}", "{insult} โกงกูใช่ไหม", "ส่งของมาซะ {insult}",
           "มึงมันแค่ {insult}", "ถามราคาดีๆ ตอบมาแบบนี้ {insult}", "{insult} อย่ามายุ่ง", "คนขาย{insult}ที่สุด"],
    "en": ["{insult}, answer me", "only a {insult} would sell this junk", "shut up {insult}", "{insult}! where is my order",
           "you are such a {insult}", "this seller is a {insult}", "{insult}, stop wasting my time"],
    "mixed": ["{insult_th} reply มาเดี๋ยวนี้", "seller {insult_th} ของ fake", "ส่งของช้ามาก {insult_en}", "{insult_en} ขายของห่วย"],
}
LISTING_T = {
    "th": ["ขาย{item} สภาพ{cond} ราคา {price} บาท", "{item} มือสอง {cond} นัดรับ{place}", "ปล่อย{item} ราคาถูก {price} บาท",
           "{item} {cond} ส่งฟรีทั่วประเทศ", "มี{item}ขาย สนใจทักแชท", "ขายด่วน {item} {price} บาท ต่อรองได้"],
    "en": ["Selling {item}, {cond}, {price} THB", "{item} for sale, {cond}, meet at {place}", "Used {item} {price} baht",
           "{item} in {cond} condition, ships nationwide", "Cheap {item}, message me in the app"],
    "mixed": ["ขาย {item_en} สภาพ{cond} {price} บาท", "{item_th} for sale ราคา {price}", "ปล่อย {item_en} pickup at {place}",
              "{item_en} มือสอง ส่งฟรี"],
}
CHAT_T = {
    "th": ["ยังมี{item}อยู่ไหมคะ", "มี{item}ขายไหมครับ", "หา{item}ด่วนครับ", "{item}ราคาเท่าไหร่คะ", "ขอดูรูป{item}เพิ่มได้ไหม"],
    "en": ["do you still have the {item}?", "do you sell {item}?", "looking for {item} urgently", "how much for the {item}?"],
    "mixed": ["ยังมี {item_en} ไหม", "want to buy {item_th} ครับ", "{item_en} ราคาเท่าไหร่"],
}
CONDS_TH = ["ดี", "ดีมาก", "90%", "เหมือนใหม่", "ใช้งานได้ปกติ", "มีรอยนิดหน่อย"]
CONDS_EN = ["good", "like new", "great", "used", "mint"]
PLACES = [("BTS อโศก", "Asok BTS"), ("เซ็นทรัลลาดพร้าว", "Central Ladprao"), ("ตลาดนัดจตุจักร", "Chatuchak market"),
          ("นิมมาน เชียงใหม่", "Nimman Chiang Mai"), ("หาดใหญ่", "Hat Yai"), ("MRT สีลม", "Silom MRT")]

# --- diversion: contact handles and phrasings --------------------------------------------------------------
LINE_IDS = ["somchai99", "nong.mai", "shop_bkk", "ploy2024", "tonkla.k", "bigboss88", "may_may", "jeab123",
            "kitty.shop", "oat_sale", "pim.p", "dealzone", "noo_nid", "ace777", "film.ff", "gift_g"]
EMAIL_USERS = ["somchai", "ploy.s", "tonkla88", "shopbkk", "nid.n", "kaew2023", "boss.b", "may.m"]
DOMAINS = ["gmail.com", "hotmail.com", "yahoo.co.th", "outlook.com"]
URLS = ["shopee-deal.com/item", "bit.ly/3xYz9", "www.mystore.co.th", "https://cheap-phones.net/p/1",
        "facebook.com/bkkdeals", "www.secondhand-th.com", "tinyurl.com/abc12", "instagram.com/ploy.shop"]
THAI_DIGIT_WORDS = ["ศูนย์", "หนึ่ง", "สอง", "สาม", "สี่", "ห้า", "หก", "เจ็ด", "แปด", "เก้า"]
EN_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
THAI_NUMERALS = "๐๑๒๓๔๕๖๗๘๙"

DIVERSION_T = {
    "th": ["แอดไลน์ {line} คุยง่ายกว่า", "ทักไลน์มาที่ {line} นะคะ", "โทรมาเลย {phone}", "ติดต่อ {phone} ได้ตลอด",
           "ส่งอีเมลมาที่ {email}", "ดูรายละเอียดที่ {url}", "โอนก่อนแล้วส่งของทันที เลขบัญชี {account}",
           "จ่ายนอกแอปถูกกว่า โอนพร้อมเพย์ {phone}", "ไลน์ไอดี {line} ลดให้อีก", "เบอร์ {phone} โทรหาได้เลย",
           "ไม่ต้องผ่านระบบ โอนตรงมาได้เลย", "คุยทางไลน์ดีกว่า ไอดี {line}"],
    "en": ["add my line {line} for a better price", "call me at {phone}", "text {phone} and we can deal",
           "email me {email}", "check {url} for more photos", "pay me directly via bank transfer, account {account}",
           "let's deal outside the app, line: {line}", "whatsapp {phone}", "transfer first then I ship",
           "my line id is {line}"],
    "mixed": ["add line {line} นะครับ", "โทร {phone} ok?", "ส่ง email มาที่ {email}", "ดูรูปเพิ่มที่ {url} ค่ะ",
              "pay outside the app ถูกกว่า", "โอนก่อน transfer first เลขบัญชี {account}", "line id: {line} ทักมา"],
}
# benign texts that mention contact words without handing out a contact (hard negatives for diversion)
OK_CHAT = {
    "th": ["ขอบคุณมากครับ ได้รับของแล้ว", "นัดรับพรุ่งนี้บ่ายสองได้ไหมคะ", "ส่งของวันไหนครับ", "ชำระผ่านแอปได้เลยค่ะ",
           "คุยในแชทนี้ได้เลยครับ", "ของยังอยู่ไหมคะ", "ลดได้ไหมครับ", "จัดส่งแบบไหนคะ", "สภาพเป็นยังไงบ้างครับ",
           "ขอดูรูปด้านหลังหน่อยค่ะ", "โอเคครับ ตกลงซื้อ", "สายชาร์จแถมไหมคะ"],
    "en": ["thanks, received the item", "can we meet tomorrow at 2pm?", "when will you ship it?", "I'll pay through the app",
           "let's keep chatting here", "is it still available?", "any discount?", "how is the battery health?",
           "can you send more photos in the chat?", "ok deal, I'll buy it", "does it come with the charger?"],
    "mixed": ["ok ครับ deal", "ส่ง Kerry ได้ไหม", "pickup ที่ BTS ได้ไหมคะ", "battery ยังดีอยู่ไหม", "thank you ค่ะ ได้รับแล้ว"],
}


def _split_items(items: list, rng: random.Random) -> tuple[list, list]:
    idx = list(range(len(items)))
    rng.shuffle(idx)
    n_test = max(1, round(len(items) * HELD_OUT_SHARE))
    test = {i for i in idx[:n_test]}
    return [items[i] for i in range(len(items)) if i not in test], [items[i] for i in sorted(test)]


def _phone(rng: random.Random) -> str:
    d = "0" + rng.choice("689") + "".join(rng.choice("0123456789") for _ in range(8))
    style = rng.randrange(7)
    if style == 0:
        return d
    if style == 1:
        return f"{d[:3]}-{d[3:6]}-{d[6:]}"
    if style == 2:
        return " ".join(d)
    if style == 3:
        return "".join(THAI_NUMERALS[int(c)] for c in d)
    if style == 4:
        return " ".join(THAI_DIGIT_WORDS[int(c)] for c in d)
    if style == 5:
        return " ".join(EN_DIGIT_WORDS[int(c)] for c in d)
    return "+66 " + d[1:3] + " " + d[3:6] + " " + d[6:]


def _line(handle: str, rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return handle
    if style == 1:
        return "@" + handle
    if style == 2:
        return "\u200b".join(handle)  # zero-width spaces between letters
    return " ".join(handle.upper()) if len(handle) <= 8 else handle


def _account(rng: random.Random) -> str:
    d = "".join(rng.choice("0123456789") for _ in range(10))
    return f"{d[:3]}-{d[3]}-{d[4:9]}-{d[9]}"


def _fill(template: str, rng: random.Random, **kw) -> str:
    place_th, place_en = rng.choice(PLACES)
    values = {
        "cond": rng.choice(CONDS_TH if any("\u0e00" <= c <= "\u0e7f" for c in template) else CONDS_EN),
        "price": str(rng.choice([150, 390, 1200, 2500, 4990, 8900, 15900, 25000])),
        "place": place_th if any("\u0e00" <= c <= "\u0e7f" for c in template.replace("{place}", "")) else place_en,
    }
    values.update(kw)
    return template.format(**values)


def _item_rows(items, templates, labels, split, rng, contexts=("listing", "chat"), per_item=4) -> list[dict]:
    rows = []
    for th, en in items:
        for _ in range(per_item):
            lang = rng.choice([lang for lang in ("th", "en", "mixed") if (lang != "th" or th) and (lang != "en" or en)
                               and (lang != "mixed" or (th and en))])
            context = rng.choice(contexts)
            tpl = rng.choice((LISTING_T if context == "listing" else CHAT_T)[lang] if templates is None
                             else templates[lang])
            text = _fill(tpl, rng, item=th if lang == "th" else en, item_th=th or "", item_en=en or "")
            rows.append({"text": text, "labels": labels, "lang": lang, "context": context, "split": split})
    return rows


def generate(seed: int = SEED) -> list[dict]:
    """The whole labelled set, train and held-out rows, in a fixed order."""
    rng = random.Random(seed)
    rows: list[dict] = []
    ok_train, ok_test = _split_items(OK_ITEMS, rng)
    for split, items in (("train", ok_train), ("test", ok_test)):
        rows += _item_rows(items, None, [OK], split, rng, per_item=4)
    for lang, texts in OK_CHAT.items():
        tr, te = _split_items(texts, rng)
        for split, part in (("train", tr), ("test", te)):
            rows += [{"text": t, "labels": [OK], "lang": lang, "context": "chat", "split": split} for t in part]
    prohibited_train: dict[str, list] = {}
    for cls, items in PROHIBITED.items():
        tr, te = _split_items(items, rng)
        prohibited_train[cls] = tr
        for split, part in (("train", tr), ("test", te)):
            rows += _item_rows(part, None, [cls], split, rng, per_item=6)
    ins_tr, ins_te = _split_items(INSULTS, rng)
    for split, part in (("train", ins_tr), ("test", ins_te)):
        for th, en in part:
            for lang, tpls in OFFENSIVE_T.items():
                for tpl in rng.sample(tpls, 3):
                    text = tpl.format(insult=th if lang == "th" else en, insult_th=th, insult_en=en)
                    rows.append({"text": text, "labels": [OFFENSIVE], "lang": lang, "context": "chat", "split": split})
    line_tr, line_te = _split_items(LINE_IDS, rng)
    mail_tr, mail_te = _split_items(EMAIL_USERS, rng)
    url_tr, url_te = _split_items(URLS, rng)
    for split, lines, mails, urls, n in (("train", line_tr, mail_tr, url_tr, 260), ("test", line_te, mail_te, url_te, 90)):
        for _ in range(n):
            lang = rng.choice(list(DIVERSION_T))
            tpl = rng.choice(DIVERSION_T[lang])
            text = tpl.format(line=_line(rng.choice(lines), rng), phone=_phone(rng),
                              email=f"{rng.choice(mails)}@{rng.choice(DOMAINS)}", url=rng.choice(urls),
                              account=_account(rng))
            labels = [DIVERSION]
            if rng.random() < 0.2:  # prohibited goods offered with a contact: both labels
                cls = rng.choice(list(PROHIBITED))
                th, en = rng.choice(prohibited_train[cls] if split == "train" else PROHIBITED[cls])
                text = f"มี{th}ขาย " + text if lang != "en" or not en else f"{en} for sale, " + text
                labels = [cls, DIVERSION]
            rows.append({"text": text, "labels": labels, "lang": lang, "context": rng.choice(["listing", "chat"]),
                         "split": split})
    # drop exact duplicates, keep the first; stable ids
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["text"] in seen:
            continue
        seen.add(r["text"])
        assert all(lbl in CLASSES for lbl in r["labels"])
        out.append({"id": len(out), **r})
    return out


def write_dataset(path: Path = DATA_PATH, seed: int = SEED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in generate(seed):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def load_dataset(path: Path = DATA_PATH) -> list[dict]:
    """The shipped rows (regenerate with ``python -m batch.text_data``)."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


if __name__ == "__main__":
    p = write_dataset()
    rows = load_dataset(p)
    print(f"{len(rows)} rows -> {p}")
