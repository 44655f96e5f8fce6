"""Word lists and plot templates for the synthetic children's stories (`stories.py`).

Everything here is data, written for this project, so the corpus is license-clean by
construction. `stories.py` parses `PLOTS` and fills it from the word lists.

Plot text format (one section per `== name ==` header):
  * a line starts a beat (one sentence or a few); an indented line is another way to say
    the beat above; `? ` before a beat makes it optional;
  * a blank line ends a paragraph; `#` starts a comment line;
  * `[a|b|c]` picks one alternative (nesting allowed, `[x|]` means "maybe x");
  * `{slot}` is filled from the story's cast; `{Slot}` is the same with a capital letter.

Slots: hero `{hero} {he} {him} {his} {self} {a_hero} {a_kind} {went} {joy} {look}`; friend
`{friend} {fhe} {fhim} {fhis} {fself} {a_friend} {fkind} {fjoy}`, first mention `{meet}`;
parent `{parent} {phe} {phim} {phis}` (`{Parent}` as a name: "said Mom"), grandparent
`{grand}`; `{place}` ("the beach"), `{at_place}` ("at the beach"), `{spot1} {spot2} {spot3}`,
`{home} {hobby}`; toy `{obj} {a_obj} {a_toy} {the_obj} {objadj} {play} {played}`; `{veg}` (plural
food); and the keys of the scenario tables below (`fear_*`, `stuck_*`, `craft_*`, `find_*`,
`hurt_*`, `warn_*`, `chore*`, `a_craft`, `need`, `wish_end`, `indoor`, `plant_end`).
"""

GIRLS = (
    "Lily",
    "Sue",
    "Mia",
    "Anna",
    "Lucy",
    "Emma",
    "Zoe",
    "Ella",
    "Amy",
    "Rose",
    "Kate",
    "Jane",
    "Molly",
    "Sara",
    "Daisy",
    "Ruby",
    "Grace",
    "Nora",
    "Ivy",
    "Lena",
    "Maya",
    "Ava",
    "Chloe",
    "Hannah",
    "Sophie",
    "Tina",
    "Julia",
    "Ellie",
    "Kim",
    "Mary",
    "Alice",
    "Bella",
    "Clara",
    "Olive",
    "Penny",
    "Hazel",
    "Luna",
    "Fiona",
    "Jenny",
    "Millie",
)
BOYS = (
    "Tom",
    "Ben",
    "Jack",
    "Sam",
    "Max",
    "Leo",
    "Tim",
    "Joe",
    "Finn",
    "Jake",
    "Noah",
    "Luke",
    "Ryan",
    "Alex",
    "Dan",
    "Bob",
    "Eli",
    "Owen",
    "Henry",
    "Oscar",
    "Milo",
    "Theo",
    "Adam",
    "Peter",
    "Nick",
    "Charlie",
    "Billy",
    "Jim",
    "Paul",
    "Lucas",
    "Toby",
    "Jay",
    "Kevin",
    "Mark",
    "Ned",
    "Oliver",
    "Rex",
    "Sid",
    "Zack",
    "Louis",
)
PET_NAMES = (
    "Spot",
    "Fluffy",
    "Buddy",
    "Coco",
    "Lucky",
    "Sunny",
    "Pip",
    "Mittens",
    "Whiskers",
    "Snowy",
    "Patch",
    "Bubbles",
    "Ginger",
    "Pepper",
    "Rusty",
    "Biscuit",
    "Honey",
    "Zip",
    "Bolt",
    "Tiny",
    "Dot",
    "Muffin",
    "Peanut",
    "Cookie",
    "Sparky",
    "Bingo",
    "Button",
    "Fuzzy",
    "Hoppy",
    "Puff",
    "Sky",
    "Twig",
    "Acorn",
    "Pebble",
    "Maple",
    "Juno",
)

# kind -> (how it moves, what it does when happy, where it lives, what it looks like)
ANIMALS = {
    "dog": (
        "ran",
        "[wagged {his} tail|barked with joy]",
        "in a little house with a big yard",
        "soft brown fur",
    ),
    "puppy": (
        "ran",
        "[wagged {his} tail|jumped in a happy circle]",
        "in a cozy house with a garden",
        "floppy ears",
    ),
    "cat": ("ran", "[purred|swished {his} tail]", "in a warm house with a sunny window", "soft gray fur"),
    "kitten": (
        "ran",
        "[purred happily|rolled on {his} back]",
        "in a little house on a quiet street",
        "white paws",
    ),
    "bunny": (
        "hopped",
        "[hopped up and down|wiggled {his} nose]",
        "in a cozy hole under a big tree",
        "long ears",
    ),
    "bird": (
        "flew",
        "[sang a happy song|flapped {his} wings]",
        "in a nest high up in an old tree",
        "bright blue feathers",
    ),
    "bear": (
        "walked",
        "[gave a big bear hug|danced a happy dance]",
        "in a big cave in the woods",
        "thick brown fur",
    ),
    "fox": (
        "ran",
        "[swished {his} tail|jumped for joy]",
        "in a den at the edge of the forest",
        "a bushy red tail",
    ),
    "duck": ("waddled", "[flapped {his} wings|quacked with joy]", "by a quiet pond", "yellow feathers"),
    "mouse": (
        "ran",
        "[squeaked with joy|did a tiny dance]",
        "in a tiny hole in an old wall",
        "a long pink tail",
    ),
    "frog": (
        "hopped",
        "[jumped up high|croaked a happy song]",
        "in a little green pond",
        "bright green skin",
    ),
    "pig": ("ran", "[rolled in the grass|gave a happy oink]", "on a big farm", "a curly tail"),
    "owl": (
        "flew",
        "[hooted happily|flapped {his} wings]",
        "in a hollow tree in the forest",
        "big round eyes",
    ),
    "squirrel": ("ran", "[did a little dance|flicked {his} tail]", "in a tall oak tree", "a fluffy tail"),
    "turtle": (
        "walked",
        "[smiled a big smile|did a slow little dance]",
        "near a sunny pond",
        "a hard green shell",
    ),
    "lion": (
        "ran",
        "[gave a happy roar|shook {his} mane]",
        "in the tall grass of a warm land",
        "a big golden mane",
    ),
    "monkey": (
        "ran",
        "[clapped {his} hands|swung from a branch]",
        "in a tall tree in the jungle",
        "a long tail",
    ),
    "elephant": (
        "walked",
        "[raised {his} trunk and trumpeted|stomped {his} feet with joy]",
        "near a big river",
        "big floppy ears",
    ),
    "horse": (
        "galloped",
        "[kicked up {his} heels|neighed with joy]",
        "on a green farm",
        "a shiny black mane",
    ),
    "lamb": ("ran", "[jumped for joy|skipped around]", "on a hill with green grass", "soft white wool"),
    "hedgehog": (
        "walked",
        "[rolled into a happy ball|smiled a big smile]",
        "under a pile of leaves in the garden",
        "little brown spikes",
    ),
    "chick": (
        "ran",
        "[peeped happily|flapped {his} little wings]",
        "in a warm coop on a farm",
        "fluffy yellow feathers",
    ),
}
HUMAN_JOYS = "[jumped up and down|clapped {his} hands|smiled from ear to ear|laughed and laughed|danced around the room]"
HUMAN_LOOKS = (
    "big brown eyes",
    "a big smile",
    "curly red hair",
    "a yellow raincoat",
    "rosy cheeks",
    "freckles on {his} nose",
    "long brown hair",
    "a red hat",
    "shiny black shoes",
    "a missing tooth",
)
HERO_ADJS = (
    "little",
    "small",
    "happy",
    "kind",
    "curious",
    "brave",
    "shy",
    "friendly",
    "cheerful",
    "playful",
    "sweet",
    "young",
    "clever",
    "gentle",
    "busy",
    "silly",
)
HOMES = (
    "in a little house near the woods",
    "in a small town by the sea",
    "on a big farm",
    "in a cozy house with a red door",
    "near a big green forest",
    "in a busy city",
    "by a quiet lake",
    "at the edge of a sunny meadow",
    "in a little village on a hill",
    "in a yellow house on a quiet street",
    "in a small house with a big garden",
)
HOBBIES = (
    "play outside",
    "sing songs",
    "draw pictures",
    "run in the grass",
    "look at the clouds",
    "read books",
    "dance",
    "explore",
    "help at home",
    "climb trees",
    "splash in puddles",
    "pick flowers",
    "build things with blocks",
    "play hide and seek",
    "watch the birds",
    "count the stars",
    "make up stories",
    "play in the sand",
)

# where ("in the park") -> spots where things hide (each reads after "looked ...")
PLACES = {
    "in the park": (
        "under a bench",
        "behind a big tree",
        "near the swings",
        "in the sandbox",
        "under the slide",
        "by the pond",
        "in a pile of leaves",
    ),
    "in the forest": (
        "under a pile of leaves",
        "behind a big rock",
        "inside a hollow log",
        "near a little stream",
        "under a bush",
        "between the roots of an old tree",
    ),
    "in the garden": (
        "under a big leaf",
        "behind the flower pots",
        "in the tall grass",
        "next to the carrots",
        "under a rose bush",
        "near the little gate",
    ),
    "at the beach": (
        "in the sand",
        "behind a big rock",
        "near the water",
        "next to a sandcastle",
        "under a beach towel",
        "by the tide pools",
    ),
    "on the farm": (
        "in the barn",
        "behind the haystack",
        "near the pig pen",
        "under the old tractor",
        "by the fence",
        "next to the chicken coop",
    ),
    "in the backyard": (
        "under the porch",
        "behind the shed",
        "in the grass",
        "near the fence",
        "under the big tree",
        "next to the swing",
    ),
    "in the meadow": (
        "in the tall grass",
        "behind a little hill",
        "near the old tree",
        "among the flowers",
        "by the stream",
        "under a big rock",
    ),
    "at the playground": (
        "under the slide",
        "near the swings",
        "in the sandbox",
        "behind the seesaw",
        "under the monkey bars",
        "by the gate",
    ),
    "at the lake": (
        "by the dock",
        "in the reeds",
        "under a log",
        "near the boats",
        "behind a big rock",
        "on the sandy shore",
    ),
    "on the hill": (
        "behind a bush",
        "in the long grass",
        "under a rock",
        "near the top",
        "by an old fence",
        "next to a fallen tree",
    ),
    "in the school yard": (
        "under a bench",
        "near the door",
        "behind the big tree",
        "by the fence",
        "in the grass",
        "next to the bike rack",
    ),
    "in the woods": (
        "under a fallen log",
        "behind a mossy rock",
        "in a patch of ferns",
        "near a tall pine tree",
        "by a little creek",
        "under a pile of sticks",
    ),
}

# toy -> (colors and looks, play verb, play verb past)
OBJECTS = {
    "ball": (("red", "blue", "big", "bouncy", "shiny", "green"), "kick", "kicked"),
    "kite": (("red", "yellow", "big", "colorful", "purple"), "fly", "flew"),
    "teddy bear": (("soft", "brown", "fluffy", "old", "little"), "hug", "hugged"),
    "toy car": (("red", "fast", "little", "shiny", "blue"), "race", "raced"),
    "toy boat": (("little", "wooden", "blue", "white"), "sail", "sailed"),
    "drum": (("big", "loud", "shiny", "red"), "play", "played"),
    "book": (("big", "new", "old", "colorful"), "read", "read"),
    "doll": (("pretty", "little", "soft", "old"), "dress up", "dressed up"),
    "toy train": (("long", "blue", "old", "shiny"), "push", "pushed"),
    "robot": (("silver", "little", "shiny", "funny"), "wind up", "wound up"),
    "bike": (("red", "new", "blue", "shiny"), "ride", "rode"),
    "wagon": (("red", "little", "old", "wooden"), "pull", "pulled"),
    "whistle": (("shiny", "little", "silver"), "blow", "blew"),
    "bell": (("little", "shiny", "gold"), "ring", "rang"),
    "marble": (("shiny", "blue", "green", "glass"), "roll", "rolled"),
    "yo-yo": (("red", "shiny", "new", "orange"), "spin", "spun"),
    "puppet": (("funny", "soft", "green", "silly"), "play with", "played with"),
    "toy plane": (("white", "little", "fast", "red"), "fly", "flew"),
    "jump rope": (("long", "pink", "new", "yellow"), "jump with", "jumped with"),
    "flute": (("little", "wooden", "silver"), "play", "played"),
}
VEGGIES = (
    "peas",
    "carrots",
    "green beans",
    "beets",
    "mushrooms",
    "tomatoes",
    "onions",
    "sprouts",
    "spinach leaves",
    "radishes",
)

FEARS = (
    {
        "fear": "the dark",
        "fear_scene": "At night, when {his} {parent} turned off the light, {hero} [hid under {his} blanket|pulled the blanket over {his} head|called for {his} {parent}]. The room was [so dark|very dark and quiet].",
        "fear_comfort": '"The dark is just the night coming to rest," said {Parent}. "Your room is the same room, only with the lights off. The moon and the stars are keeping watch."',
        "fear_brave": "{Hero} peeked out from under the blanket. {He} saw the [bright|big|round] moon shining through the window. It was [pretty|beautiful|not scary at all].",
    },
    {
        "fear": "thunder",
        "fear_scene": "One night, a big storm came. Boom! went the thunder. {Hero} [ran to {his} {parent}|hid under the bed|covered {his} ears].",
        "fear_comfort": '"Thunder is just a big noise that the sky makes," said {Parent}. "It can\'t hurt you. We are safe and dry inside."',
        "fear_brave": 'When the next boom came, {hero} [did not hide|counted to ten|laughed and shouted, "Boom!"]. The storm did not seem so big anymore.',
    },
    {
        "fear": "the water",
        "fear_scene": "One hot day, {hero} went to the lake with {his} {parent}. Everyone was swimming, but {hero} stayed on the sand. The water looked [so big|too deep|cold and dark].",
        "fear_comfort": '"I will hold your hand," said {Parent}. "We can go in slowly, one step at a time."',
        "fear_brave": "{Hero} put one foot in the water, then the other. The water was cool and nice. Soon {he} was splashing and laughing.",
    },
    {
        "fear": "the tall slide",
        "fear_scene": "At the playground, there was a new slide. It was very tall. {Hero} climbed up the steps, but at the top {he} [stopped|froze|looked down and felt dizzy].",
        "fear_comfort": '"You can do it," said {Parent} from the bottom. "I will be right here to catch you."',
        "fear_brave": '{Hero} took a deep breath and let go. Whoosh! Down {he} went. "That was fun!" {he} laughed. "Again!"',
    },
    {
        "fear": "the big dog next door",
        "fear_scene": "The big dog next door was called Bruno. Every time Bruno barked, {hero} [ran away|hid behind {his} {parent}|closed {his} eyes].",
        "fear_comfort": '"Bruno is a friendly dog," said {Parent}. "He barks because he wants to play. Let\'s say hello together."',
        "fear_brave": "{Hero} held out {his} hand very slowly. Bruno sniffed it and gave it a big lick. {Hero} giggled. Bruno wagged his tail.",
    },
    {
        "fear": "bees",
        "fear_scene": "In the garden, a big bee buzzed near {hero}. {He} [screamed|ran inside|waved {his} arms].",
        "fear_comfort": '"Bees are busy helping the flowers grow," said {Parent}. "If you stay calm, the bee will fly away."',
        "fear_brave": "The next time a bee came, {hero} stood very still. The bee landed on a flower, then flew away. {Hero} smiled.",
    },
    {
        "fear": "the first day of school",
        "fear_scene": "Tomorrow was {his} first day of school. That night, {hero} could not sleep. What if nobody liked {him}?",
        "fear_comfort": '"Everyone feels a little scared on the first day," said {Parent}. "Just be yourself, and you will make friends."',
        "fear_brave": "At school, {hero} said hello to a kid with a blue backpack. They played blocks together all morning. School was fun!",
    },
    {
        "fear": "the doctor",
        "fear_scene": "{Hero} had to go to the doctor. In the waiting room, {he} [held {his} {parent}'s hand tight|did not want to go in|felt {his} tummy flip].",
        "fear_comfort": '"The doctor helps us stay healthy," said {Parent}. "She is very kind. I will be with you the whole time."',
        "fear_brave": 'The doctor smiled and showed {hero} how to listen to {his} own heart. Thump, thump! "That was not scary at all," said {hero}.',
    },
)

STUCKS = (
    {
        "stuck_obj": "kite",
        "stuck_start": "{Hero} went to {place} to fly {his} new kite. The kite went up, up, up into the sky.",
        "stuck_how": "Then a big gust of wind came. The kite flew into a tall tree and got stuck!",
    },
    {
        "stuck_obj": "balloon",
        "stuck_start": "{Hero} had a [red|big|shiny] balloon from the fair. {He} held the string tight as {he} walked to {place}.",
        "stuck_how": "Then the string slipped out of {his} hand. The balloon floated up and got stuck in the branches of a tall tree!",
    },
    {
        "stuck_obj": "ball",
        "stuck_start": "{Hero} was kicking {his} ball {at_place}. {He} kicked it higher and higher.",
        "stuck_how": "Then {he} kicked it very hard. The ball flew up and got stuck in a tall tree!",
    },
    {
        "stuck_obj": "paper plane",
        "stuck_start": "{Hero} made a paper plane and took it to {place}. It flew far and fast.",
        "stuck_how": "Then {he} threw it as hard as {he} could. The plane flew up and landed on a high branch of a tall tree!",
    },
    {
        "stuck_obj": "hat",
        "stuck_start": "{Hero} wore {his} new hat to {place}. It was {his} favorite hat.",
        "stuck_how": "Then the wind blew the hat right off {his} head! It landed on a branch of a tall tree.",
    },
    {
        "stuck_obj": "frisbee",
        "stuck_start": "{Hero} was playing with a frisbee {at_place}. It spun through the air like a bird.",
        "stuck_how": "Then {he} threw it too high. The frisbee landed on top of a tall tree!",
    },
)

CRAFTS = (
    {
        "craft": "card",
        "a_craft": "a card",
        "craft_make": "{He} got some paper and {his} crayons. {He} folded the paper and drew a big red heart and a yellow sun.",
        "craft_oops": "Then {he} spilled {his} cup of water on the card! The colors ran together.",
        "craft_fix": "{He} let the card dry in the sun. Then {he} drew little stars over the wet spots. Now it looked even prettier.",
    },
    {
        "craft": "cake",
        "a_craft": "a cake",
        "craft_make": "{He} went to the kitchen with {his} {grand}. They got flour, eggs, milk and sugar, and {hero} stirred and stirred.",
        "craft_oops": "But the cake came out of the oven flat and a little burnt on one side.",
        "craft_fix": "{Hero} put sweet berries and white frosting on top. Now the cake looked like a happy face.",
    },
    {
        "craft": "flowers",
        "a_craft": "a bunch of flowers",
        "craft_make": "{He} went to the garden and picked the prettiest flowers {he} could find: red ones, yellow ones and purple ones.",
        "craft_oops": "On the way home, {he} tripped, and some of the flowers got squished.",
        "craft_fix": "{He} took out the squished flowers and tied the rest with a pretty blue ribbon. It was still a lovely bunch.",
    },
    {
        "craft": "necklace",
        "a_craft": "a necklace",
        "craft_make": "{He} found some string and a box of colorful beads. {He} put the beads on the string one by one.",
        "craft_oops": "Then the string slipped, and the beads rolled all over the floor!",
        "craft_fix": "{He} picked up every bead and started again, slowly and carefully. This time {he} tied a big knot at the end.",
    },
    {
        "craft": "picture",
        "a_craft": "a picture",
        "craft_make": "{He} got out {his} paints and a big sheet of paper. {He} painted {his} whole family standing under a rainbow.",
        "craft_oops": "But {his} brush dripped, and a big brown spot landed right in the middle.",
        "craft_fix": "{Hero} thought for a moment. Then {he} turned the brown spot into a little dog. Now the picture had a pet too!",
    },
    {
        "craft": "song",
        "a_craft": "a song",
        "craft_make": "{He} sat by the window and made up a song. It had words about the sun, the trees and how much {he} loved {his} {parent}.",
        "craft_oops": "But when {he} practiced, {he} forgot some of the words.",
        "craft_fix": "{He} wrote the words down on a piece of paper and sang the song again and again until {he} knew it by heart.",
    },
)

FINDS = (
    {
        "find_what": "a little path between the trees",
        "find_short": "a secret garden full of big, bright flowers",
        "find_follow": "They followed the path. It went around a big rock, over a little wooden bridge and up a hill.",
        "find_end": "At the end of the path, they found a secret garden full of big, bright flowers!",
    },
    {
        "find_what": "a tiny door at the bottom of an old tree",
        "find_short": "a family of mice having a tea party",
        "find_follow": "{Hero} knocked on the tiny door. Knock, knock! Slowly, the door opened.",
        "find_end": "Inside, a family of mice was having a tea party! They asked {hero} and {friend} to stay for a cookie.",
    },
    {
        "find_what": "a shiny key in the grass",
        "find_short": "an old wooden box with pretty stones and a little note inside",
        "find_follow": "They looked for a lock. They looked {spot1} and {spot2}. At last, they found an old wooden box {spot3}.",
        "find_end": 'The key fit! Inside the box, there were pretty stones and a little note that said, "For a good friend."',
    },
    {
        "find_what": "an old map under a rock",
        "find_short": "a box full of chocolate coins",
        "find_follow": "The map had a big red X on it. They turned the map this way and that way. The X was {spot1}!",
        "find_end": "They dug a hole right there and found a box full of chocolate coins!",
    },
    {
        "find_what": "a trail of small footprints",
        "find_short": "a little lost puppy",
        "find_follow": "They followed the footprints. They went on and on, and then they stopped {spot1}.",
        "find_end": "Right there, they found a little lost puppy! It wagged its tail and licked their faces.",
    },
    {
        "find_what": "a big rainbow over the trees",
        "find_short": "a field with flowers in every color of the rainbow",
        "find_follow": "They ran to find where the rainbow ended. They ran and ran, over the grass and up a little hill.",
        "find_end": "They did not find a pot of gold, but they found a field with flowers in every color of the rainbow.",
    },
    {
        "find_what": "a glowing light in the bushes",
        "find_short": "a group of fireflies",
        "find_follow": "They walked closer, very quietly. The light moved, and then there were more lights.",
        "find_end": "It was a group of fireflies! They danced in the air like tiny stars.",
    },
)

HURTS = (
    {
        "hurt_who": "a little bird with a hurt wing",
        "hurt_name": "the little bird",
        "hurt_help": "{Hero} picked up the bird very gently and took it home. {His} {parent} helped {him} wrap its wing and make a soft bed in a box.",
        "hurt_end": "After a few days, the bird's wing was all better. It flew up into the sky and sang a happy song.",
    },
    {
        "hurt_who": "a small kitten stuck in a bush",
        "hurt_name": "the kitten",
        "hurt_help": "{Hero} moved the branches away, one by one, very carefully. The kitten crawled out and gave a tiny meow.",
        "hurt_end": "{Hero} gave the kitten some milk. Then {he} found the kitten's owner, who was so happy to see it again.",
    },
    {
        "hurt_who": "a baby duck that had lost its mom",
        "hurt_name": "the baby duck",
        "hurt_help": "{Hero} walked slowly with the baby duck along the water, looking for its family.",
        "hurt_end": "At last, they found the mother duck {spot2}. The baby duck ran to her, and they swam away together.",
    },
    {
        "hurt_who": "a tiny turtle stuck on its back",
        "hurt_name": "the turtle",
        "hurt_help": "{Hero} gently turned the turtle over. Its little legs began to move again.",
        "hurt_end": "The turtle looked up at {hero} and slowly walked back to the water. It seemed to say thank you.",
    },
    {
        "hurt_who": "a puppy with a thorn in its paw",
        "hurt_name": "the puppy",
        "hurt_help": "{Hero} held the puppy's paw and pulled out the thorn very carefully. Then {he} washed the paw with cool water.",
        "hurt_end": "The puppy licked {hero}'s face and wagged its tail. Soon it was running and playing again.",
    },
    {
        "hurt_who": "a butterfly caught in a spider web",
        "hurt_name": "the butterfly",
        "hurt_help": "{Hero} used a little stick to set the butterfly free, slowly and gently, so its wings would not tear.",
        "hurt_end": "The butterfly opened its bright wings and flew away over the flowers.",
    },
)

WARNINGS = (
    {
        "warn_rule": "Please don't jump in the puddles in your new shoes.",
        "warn_act": "it rained, and {hero} saw a big puddle. It looked so fun. {Hero} jumped right in. Splash!",
        "warn_bad": "Mud went all over {his} new shoes and {his} clean clothes.",
        "warn_fix": "{Hero} helped {his} {parent} wash the shoes until they were clean again.",
    },
    {
        "warn_rule": "Don't climb on the kitchen table.",
        "warn_act": "{hero} wanted a cookie from the top shelf. {He} climbed up on the kitchen table to reach it.",
        "warn_bad": "The table wobbled, and a big cup of milk fell over. Milk spilled all over the floor!",
        "warn_fix": "{Hero} got a towel and helped clean up every drop of milk.",
    },
    {
        "warn_rule": "Don't go near the pond by yourself.",
        "warn_act": "{hero} saw a green frog by the pond. {He} ran to catch it.",
        "warn_bad": "{He} slipped on the wet grass and fell into the water with a big splash! The water was cold.",
        "warn_fix": "{His} {parent} wrapped {him} in a warm towel and made {him} a cup of hot cocoa.",
    },
    {
        "warn_rule": "Don't eat the cookies before dinner.",
        "warn_act": "the cookies smelled so good. {Hero} ate one, then two, then three.",
        "warn_bad": "Soon {his} tummy hurt, and {he} did not want any dinner at all.",
        "warn_fix": "{His} {parent} gave {him} some warm tea, and {he} rested on the couch until {he} felt better.",
    },
    {
        "warn_rule": "Don't play ball in the house.",
        "warn_act": "it was raining, and {hero} was bored. {He} threw {his} ball up high in the living room.",
        "warn_bad": "Crash! The ball hit {his} {parent}'s favorite vase, and it broke into pieces.",
        "warn_fix": "{Hero} and {his} {parent} glued the vase back together. It had cracks, but it could still hold flowers.",
    },
    {
        "warn_rule": "Please put your toys away, or someone might trip.",
        "warn_act": "{hero} left {his} toy car on the stairs and ran off to play.",
        "warn_bad": "Later, {his} {parent} stepped on the car and almost fell down the stairs!",
        "warn_fix": "{Hero} picked up all of {his} toys and put them back in the toy box.",
    },
)

INDOORS = (
    "They built a big fort with blankets and pillows. Inside the fort, they read stories with a flashlight.",
    "They got out paper and paints. {Hero} painted a picture of {place} with a big yellow sun.",
    "They baked cookies together. {Hero} helped mix the dough and put sprinkles on top.",
    "They played hide and seek. {Hero} hid behind the couch, and {his} {parent} could not find {him} for a long time!",
    "They made a puppet show with old socks. The puppets sang silly songs and told funny jokes.",
    "They built a tall tower with blocks. It was so tall that it almost touched the ceiling!",
    "They had a picnic on the living room floor with sandwiches, apples and juice.",
)

PLANT_ENDS = (
    "a big yellow sunflower, taller than {hero}",
    "a bright red flower that smelled very sweet",
    "a big round orange pumpkin",
    "a little tree with shiny red apples",
    "a plant full of juicy red strawberries",
    "a tall bean plant that climbed all the way up the fence",
)

CHORES = (
    {
        "chore": "rake the leaves in the yard",
        "chore_do": "They raked the leaves into one giant pile. Then {hero} jumped right into the middle of it! Leaves flew everywhere.",
    },
    {
        "chore": "wash all the dishes",
        "chore_do": "{Hero} stood on a stool and washed the cups. Bubbles floated up, and {he} popped them one by one.",
    },
    {
        "chore": "fold a big basket of clean clothes",
        "chore_do": "{Hero} matched all the socks. {He} pretended each sock was looking for its best friend.",
    },
    {
        "chore": "sweep the kitchen floor",
        "chore_do": "{Hero} pretended the broom was a horse and swept all the way across the kitchen, laughing.",
    },
    {
        "chore": "pull the weeds in the garden",
        "chore_do": "{Hero} pulled the weeds as fast as {he} could. {He} found a fat worm and a shiny green beetle.",
    },
    {
        "chore": "put away the food from the store",
        "chore_do": "{Hero} put the apples in a bowl and the milk in the fridge. {He} lined up all the cans like a little train.",
    },
)

WISHES = (
    {
        "need": "was sick in bed with a cold",
        "wish_end": "The next morning, {friend} felt all better and came outside to play.",
    },
    {
        "need": "had lost {fhis} favorite toy",
        "wish_end": "The next morning, {friend} found {fhis} toy right under {fhis} bed.",
    },
    {
        "need": "felt lonely in {fhis} new town",
        "wish_end": "The next day, the kids on {friend}'s street knocked on {fhis} door and asked {fhim} to play.",
    },
    {
        "need": "was sad because {fhis} garden would not grow",
        "wish_end": "The next morning, {friend}'s garden was full of bright, happy flowers.",
    },
    {
        "need": "missed {fhis} grandma, who lived far away",
        "wish_end": "That very afternoon, {friend}'s grandma came for a surprise visit.",
    },
)

PLOTS = """
== opening ==
Once upon a time, there was {a_hero} named {hero}.
  Once upon a time, there was {a_hero} named {hero}.
  Once upon a time, there lived {a_hero} named {hero}.
  Once upon a time there was {a_hero} named {hero}.
  Once upon a time there lived {a_hero} named {hero}.
  Once upon a time, in a [land far away|small village|big green valley|quiet little town], there lived {a_hero} named {hero}.
  Once upon a time, there was {a_hero}. {His} name was {hero}.
  Once upon a time, {a_hero} named {hero} [woke up early|looked out the window|was feeling very happy].
  One day, {a_hero} named {hero} [woke up early|was playing outside|looked out the window|was feeling very happy].
  There once was {a_hero} named {hero}.
  Long ago, there lived {a_hero} named {hero}.
  {Hero} was {a_hero}.
? {He} lived with {his} {parent} {home}.
  {He} lived {home}.
  {Hero} and {his} {parent} lived {home}.
? {He} loved to {hobby}.
  {He} liked to {hobby} [more than anything|every day|with {his} friends].
  {His} favorite thing to do was to {hobby}.
? {He} was [very kind|always happy|a little shy|very curious|full of energy|always smiling|a good helper], and [everyone loved {him}|{he} had many friends|{he} liked to learn new things].
  {Hero} had {look}.

== lost ==
{Hero} had {a_obj}.
  {Hero} had {a_obj} that {he} loved very much.
  One of {his} favorite things was {a_obj}.
[It was {his} favorite thing in the whole world.|{He} took it everywhere {he} went.|{He} loved it more than anything.|{His} {grand} gave it to {him} for {his} birthday.]
? Every day, {hero} would {play} {the_obj} [and laugh|for hours|with a big smile].

One [sunny|bright|warm|windy|cloudy] [day|morning|afternoon], {hero} took {the_obj} to {place}.
  One [sunny|bright|warm] [day|morning|afternoon], {hero} went to {place} and took {the_obj} with {him}.
? The [sun was shining|birds were singing|sky was blue|wind was blowing softly], and [the flowers smelled sweet|everything looked bright|{hero} felt happy].
{He} [played and played|ran and played|played for a long time] until [the sun began to set|{he} was very tired|it was time to go home].
  {He} had so much fun that {he} forgot all about {the_obj}.
When {he} [got ready|turned around] to go home, {the_obj} was gone!
  But when it was time to go home, {hero} could not find {the_obj}.
  Then {hero} looked around. {The_obj} was not there!
"Oh no! Where is my {obj}?" {hero} [cried|said|shouted].
  "My {obj}! Where did it go?" {hero} [cried|asked].
  {Hero} [felt very sad|started to cry|felt a tear roll down {his} cheek]. "I lost my {obj}," {he} said.

Just then, {meet} [came by|walked over|saw {him}].
  [Soon|Then|Just then], {meet} [came to see what was wrong|heard {him} and came over].
"Why are you sad, {hero}?" asked {friend}.
  "What is wrong?" {friend} asked.
  "Are you okay?" asked {friend}.
"I can't find my {obj}," said {hero}. "[I looked everywhere.|It was right here.|It is my favorite.]"
  {Hero} told {friend} all about {his} lost {obj}.
"Don't worry. I will help you look for it," said {friend}.
  "Let's look for it together," said {friend} [with a smile|kindly].
  "I will help you," said {friend}. "Two can look better than one."

They looked {spot1}, but it was not there.
  First, they looked {spot1}. No {obj}.
They looked {spot2}, but it was not there either.
  Then they looked {spot2}. Still no {obj}.
? {Hero} [began to feel sad again|wanted to give up]. "Maybe it is gone forever," {he} said.
  "[Don't give up|Let's keep looking]," said {friend}. "[It must be here somewhere.|We will find it.]"
Then {friend} saw something {spot3}. It was {the_obj}!
  At last, they looked {spot3}. There was {the_obj}!
  Then {hero} saw something {objadj} {spot3}. It was {his} {obj}!

"You found it!" {hero} [shouted|cried] with joy. {He} {joy}.
  {Hero} was so happy. {He} {joy}.
"Thank you, {friend}!" said {hero}. "[You are a good friend.|I could not do it without you.|You are the best!]"
  {Hero} gave {friend} a big hug. "Thank you for helping me," {he} said.
? They played with {the_obj} together until it was time to go home.
From that day on, {hero} [kept {the_obj} close|never lost {his} {obj} again|and {friend} were best friends].
? [{Hero} learned that|The lesson is that] [friends help each other|it is good to ask for help|a good friend is always there for you|when you look together, you find things faster].

== share ==
{Hero} had a new {obj}. [It was the best {obj} {he} had ever seen.|{He} loved it very much.|It was {his} favorite toy.]
  {Hero}'s {grand} gave {him} {a_obj}. {Hero} loved it very much.
  For {his} birthday, {hero} got {a_obj}. {He} was so happy.
? {He} liked to {play} {the_obj} [every day|all the time|{at_place}].

One day, {hero} took {the_obj} to {place}. There {he} saw {meet}.
  One day, {meet} came to play {at_place}. {Hero} was there with {his} new {obj}.
{Friend} looked at the {obj} [with big eyes|and smiled]. "Wow! Can I play with your {obj}?" {fhe} asked.
  "That is a nice {obj}," said {friend}. "Can I try it, please?"
"No!" said {hero}. "It is mine!" {He} held {the_obj} [tight|close|behind {his} back].
  {Hero} shook {his} head. "No, it is my {obj}. You can't have it."
{Friend} [felt sad|looked at the ground|was very sad] and [walked away|sat down alone|did not say anything].

{Hero} tried to {play} {the_obj} alone, but it was not much fun.
  {Hero} played with {his} {obj} by {self}, but {he} did not feel happy.
{He} looked at {friend}. {Friend} looked [sad|lonely|very sad].
  {He} saw {friend} sitting all alone.
? {His} {parent} [saw this|came over] and said, "{Hero}, how would you feel if {friend} did not share with you?"
  Then {hero} remembered what {his} {parent} always said: "Sharing is caring."
{Hero} thought about it. [{He} felt bad.|{He} did not want {friend} to be sad.|{He} knew what to do.]

{Hero} walked over to {friend}. "I am sorry," {he} said. "Do you want to play with my {obj}?"
  {Hero} ran to {friend} with the {obj}. "Here, you can have a turn," {he} said.
{Friend} smiled a big smile. "Yes, please! Thank you, {hero}!"
  {Friend}'s face lit up. "Really? Thank you!" {fhe} said.
They took turns and [played|laughed] [all day|until the sun went down|for a long time].
  They took turns. First {hero} {played} {the_obj}, then {friend} did. They [laughed|had fun] [all day|until the sun went down].
? [Sharing|Playing together] was much more fun than playing alone.
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [sharing makes everyone happy|it is good to share|sharing is caring|toys are more fun with a friend].
  From that day on, {hero} always shared {his} toys with {his} friends.

== fear ==
{Hero} was [a little|very] scared of {fear}.
  {Hero} was brave about many things, but {he} was scared of {fear}.
  There was one thing that {hero} did not like. It was {fear}.

{fear_scene}
"I don't like {fear}," {hero} [said|whispered|cried]. "It is [too scary|so scary]."
  "{Parent}, I am scared," said {hero}.

{His} {parent} [gave {him} a hug|sat next to {him}|held {his} hand] and said, "It is okay to be scared sometimes."
{fear_comfort}
? "Really?" asked {hero}.
  "Do you promise?" asked {hero}.
  {Hero} [thought about it|was not sure|looked up at {his} {parent}].

{fear_brave}
"I did it!" [said {hero}|{hero} cheered|{hero} shouted]. "I am not scared anymore!"
  {Hero} felt [brave|proud|strong|happy]. {Fear} did not seem so scary after all.
? {His} {parent} smiled. "I am so proud of you," {phe} said.
From that day on, {hero} was not scared of {fear} anymore.
  {Hero} learned that being brave means trying even when you are scared.
  {Hero} learned that things are not so scary when you try.

== stuck ==
{stuck_start}
{stuck_how}
"Oh no!" said {hero}. "My {stuck_obj}!"
  {Hero} looked up. {His} {stuck_obj} was [so high|way up in the tree|stuck on a high branch].

{Hero} [jumped and jumped|stood on {his} toes|tried to climb the tree], but {he} could not reach it.
  {He} jumped as high as {he} could. But the tree was too tall.
? {He} [shook the tree|called to the {stuck_obj}|waited for the wind], but the {stuck_obj} did not come down.
{Hero} sat down and [felt sad|started to cry|did not know what to do].

Then {meet} came by. "What happened?" asked {friend}.
{Hero} pointed up at the tree. "My {stuck_obj} is stuck," {he} said.
  "My {stuck_obj} is stuck in the tree, and I can't reach it," said {hero}.
"I have an idea," said {friend}. "Let's find a long stick." They found a long stick {spot1}. {Friend} held the stick steady, and {hero} poked the {stuck_obj} until it fell. Down it came!
  "Let's get help," said {friend}. They ran to get {hero}'s {parent}. {Parent} came with a big ladder. {Phe} climbed up and got the {stuck_obj} down.
  "Climb on my back," said {friend}. {Hero} stood on {friend}'s back and reached up as high as {he} could. {He} got it!
  "Let's shake the branch together," said {friend}. They found a rope, threw it over the branch and pulled hard. The {stuck_obj} fell right into {hero}'s arms!

"Thank you, {friend}!" said {hero}. [{He} {joy}.|{He} hugged {friend}.]
{Hero} and {friend} played with the {stuck_obj} together [all afternoon|until the sun went down].
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [two friends can do what one can't|it is good to ask for help|working together makes hard things easy].

== gift ==
Soon it would be {his} {parent}'s birthday. {Hero} wanted to give {phim} a special present.
  {Hero}'s {parent} had been very tired. {Hero} wanted to make something to make {phim} happy.
  {Hero} loved {his} {parent} very much. {He} wanted to make {phim} a surprise.
"What can I make?" {hero} [wondered|asked {self}|thought].
? {He} did not have any money, but {he} had a good idea.
  {He} thought and thought. Then {he} had an idea. "I will make {a_craft}!"

{craft_make}
{craft_oops}
"Oh no," said {hero}. "It is [not perfect|ruined|all wrong]." {He} [felt sad|wanted to cry].
? {His} {grand} said, "It does not have to be perfect. It is made with love."
{craft_fix}

When {his} {parent} came home, {hero} ran to the door. {He} gave {phim} the {craft}.
  When {his} {parent} came home, {hero} shouted, "Surprise!" {He} gave {phim} the {craft}.
{Parent} [smiled|had tears in {phis} eyes|laughed with joy]. "This is the best present ever!" {phe} said. "Thank you, {hero}."
  "[Did you make this for me|You made this all by yourself]?" {Parent} asked. "I love it!"
{Parent} gave {hero} a big hug.
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [a gift made with love is the best gift|making others happy makes you happy too|it is the love that counts, not how it looks].

== food ==
{Hero} did not like {veg}. When {his} {parent} put {veg} on {his} plate, {he} [pushed them away|made a funny face|said that they were yucky].
One night at dinner, there were {veg} again.
  One evening, {his} {parent} made dinner. There was a big pile of {veg} on the plate.
"I don't want {veg}," said {hero}. "They [are yucky|look funny|are gross]."
  {Hero} crossed {his} arms. "No {veg} for me!"

{His} {parent} smiled. "Have you ever tried them?" {phe} asked.
{Hero} thought. "No," {he} said [slowly|quietly].
"[Just try one bite|Try one little bite]," said {Parent}. "[If you don't like them, you don't have to eat them.|You might be surprised.|Your tummy will thank you.]"
? {Parent} [made a funny face with the {veg}|told {him} that {veg} help you grow strong|ate a bite and smiled].

{Hero} picked up one [little|tiny] bite. {He} [closed {his} eyes|held {his} nose] and put it in {his} mouth.
{He} chewed and chewed. [Then {his} eyes got big.|Then {he} smiled.]
"These are good!" said {hero}. "[Can I have more?|I like them!|They are yummy!]"

{Hero} ate all the {veg} on {his} plate. {His} {parent} [laughed|was very proud].
? From then on, {hero} [always ate {his} {veg}|liked to try new food].
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [it is good to try new things|you can't know if you like something until you try it|new food can be yummy].

== explore ==
One day, {hero} was [playing|walking|exploring] {at_place} when {he} saw {find_what}.
"[What is that?|What could that be?|How strange!]" {hero} [said|wondered|whispered].
{He} ran to get {meet}. "Look what I found!" {he} said.
  Just then, {meet} came by. "What did you find?" asked {friend}.

{find_follow}
? They were [a little scared|very quiet|so excited], but they [kept going|did not stop|wanted to know what was there].
{find_end}
"Wow!" said {friend}. "[It is so pretty!|I have never seen anything like it!|This is amazing!]"

They [played there|stayed there|looked around] until [the sun began to set|it was time for dinner]. Then they went home [happy|with big smiles].
? {Hero} told {his} {parent} all about it. "[What an adventure!|It was the best day ever!]" {he} said.
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [there are many wonderful things to find if you look|the world is full of surprises|adventures are more fun with a friend].

== kind ==
One [day|morning|afternoon], {hero} was [walking|playing] {at_place} when {he} heard a [small|soft|sad] sound.
  One day {at_place}, {hero} heard a little cry.
{He} looked {spot1} and saw {hurt_who}.
"Oh, you poor thing," said {hero}. "[Don't be scared.|I will help you.|Let me help you.]"

{hurt_help}
? {He} [gave it some water|sang it a soft song|talked to it kindly] and [stayed by its side|let it rest].

{hurt_end}
? From then on, {hurt_name} came back to visit {hero} every day.
{Hero} [felt warm inside|was so happy|smiled a big smile].
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [being kind to animals is important|even a small kindness can make a big difference|helping others feels good].

== listen ==
{His} {parent} always said, "{warn_rule}"
? {Hero} [always said, "Okay."|would nod, but {he} did not really listen.]

One day, {warn_act}
{warn_bad}
"Oh no!" cried {hero}. [{He} felt very bad.|{He} started to cry.|{He} knew {he} had not listened.]

{His} {parent} came [running|to see what happened]. {Hero} [looked down at {his} feet|felt {his} cheeks get hot].
"I am sorry, {Parent}," said {hero}. "I did not listen to you."
  "I'm sorry," {hero} said. "I should have listened."
{Parent} [hugged {him}|knelt down|smiled kindly]. "Thank you for saying sorry," {phe} said. "[Rules are there to keep you safe.|We all make mistakes.|I am glad you told me.]"
{warn_fix}

From that day on, {hero} always listened to {his} {parent}.
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [it is important to listen|rules help keep us safe|saying sorry makes things better].

== race ==
One [sunny|bright] day, {hero} and {meet} had a race {at_place}.
  There was going to be a big race {at_place}. {Hero} and {meet} [both wanted to win|were very excited].
"I am going to win!" said {hero}.
  "I am the fastest!" said {friend}. "No, I am!" said {hero}.
? They [stood at the start line|got ready|lined up with the other racers].
"Ready, set, go!" [shouted {hero}'s {parent}|called a big wise owl|called the teacher]. [They ran as fast as they could.|And they were off!]

{Hero} was [in front|winning|very fast]. {He} could see the finish line.
Then {he} heard a cry. {Friend} [had tripped over a rock|had fallen down|had hurt {fhis} knee].
{Hero} [stopped|looked back]. {He} wanted to win, but {friend} [was hurt|needed help].

{Hero} {went} back to {friend}. "Are you okay?" {he} asked.
{He} helped {friend} up. "[Let's finish together|We can walk the rest of the way|Lean on me]," {he} said.
They [walked|went] to the finish line [side by side|together]. They came in last, but everyone [cheered|clapped] for them.

"You could have won," said {friend}. "Why did you come back?"
"Because [friends are more important than winning|you are my friend|helping you is better than winning]," said {hero}.
? {Friend} smiled. "You are the best friend ever."
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [being a good friend is better than winning|kindness is more important than winning].

== rain ==
One morning, {hero} wanted to go to {place}. {He} wanted to [play all day|{play} {his} {obj}|run and play].
But when {he} looked out the window, it was raining. [Drip, drop, drip.|The sky was gray.|Big drops fell on the glass.]
"Oh no," said {hero}. "Now I can't go outside." {He} [felt sad|sat by the window|frowned].

{His} {parent} [saw {him}|sat down next to {him}]. "We can have fun inside too," {phe} said.
  "Don't be sad," said {Parent}. "I have an idea."
{indoor}
? {Hero} laughed and laughed. [{He} forgot all about the rain.|It was so much fun.]

After a while, the rain stopped. The sun came out, and there was a big rainbow in the sky!
  Later, the clouds went away. The sun came out, and a rainbow [stretched across the sky|appeared over the trees]!
  When they looked out the window again, the rain was gone. [A bright rainbow filled the sky!|The sun was shining on the wet grass.]
"Look!" [said {hero}|shouted {hero}]. "A rainbow!"
? They put on their boots and [went outside to jump in the puddles|went to {place} after all].
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [you can have fun on a rainy day too|there is always a way to have fun|a rainy day can still be a happy day].

== shy ==
{Hero} was [very shy|a little shy|shy around new friends]. {He} did not like to talk to [new kids|anyone {he} did not know].
  {Hero} wanted to make a new friend, but {he} was shy.
One day {at_place}, {he} saw {a_friend} [sitting alone|playing by {fself}|looking around].
{Hero} wanted to say hello, but {his} [tummy felt funny|legs felt wobbly|voice felt very small].

{His} {parent} [said|whispered], "Just say hi. [{Fhe} might be shy too.|You can do it.]"
{Hero} took a deep breath. {He} {went} over and said, "Hi! My name is {hero}. What is your name?"
The {fkind} smiled. "[I am|My name is] {friend}," {fhe} said.

"Do you want to play?" asked {hero}.
  "Would you like to {play} my {obj} with me?" asked {hero}.
"Yes!" said {friend}. {Fhe} {fjoy}.
They [played|laughed|ran and played] [all afternoon|until it was time to go home|together].
? They [played on the swings|built a sandcastle|played tag|looked for bugs|shared a snack] and [laughed a lot|had so much fun].

When it was time to go, {friend} said, "Can we play again tomorrow?"
"Yes!" said {hero}. {He} was not shy anymore.
  {Hero} smiled. {He} had a new friend.
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [saying hello is the first step to making a friend|being brave can lead to good things|new friends are everywhere].

== sorry ==
{Hero} and {meet} were playing with {his} {obj} {at_place}.
They both wanted to {play} {the_obj} at the same time.
"It is my turn!" said {hero}.
  "Give it to me!" said {hero}. "It is mine!"
  "I want to go first!" [said|shouted] {hero}.
"No, it is my turn!" said {friend}.
They [pulled|tugged] and [pulled|tugged]. [{The_obj} fell into a big puddle of mud.|{The_obj} flew out of their hands and landed in the mud.] Now it was all dirty.

{Hero} was [angry|mad|upset]. "Look what you did!" {he} said.
"It was your fault!" said {friend}. They both [crossed their arms|looked away|went quiet].
? Neither of them said anything for a long time. [It was not fun anymore.|{Hero} felt sad inside.]

After a while, {hero} said, "I am sorry. I should have shared."
  At last, {hero} [walked over|turned around] and said, "I am sorry. It was my fault too."
{Friend} [looked up|smiled a little]. "I am sorry too. I should have waited for my turn."
They [gave each other a hug|shook hands|smiled at each other].

Together they washed {the_obj} with soap and water [until it was clean again|until it was shiny again].
  {His} {parent} helped them wash {the_obj}. Soon it was as good as new.
Then they took turns and [played happily|had fun] [all day|until dinner time].
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [saying sorry can fix a fight|friends can make up after a fight|taking turns is better than fighting].

== garden ==
One [spring|sunny] day, {his} {grand} gave {hero} a [tiny|little] seed. "Plant this, and [watch|see] what happens," said {Grand}.
{Hero} put the seed [in the ground by {his} house|in the garden|in a little pot] and gave it some water.

The next morning, {hero} ran outside to look. But nothing was there.
  The next day, {hero} [checked the ground|looked very closely]. There was only dirt.
"Why is it not growing?" asked {hero}.
  "[Where is my plant?|Is it broken?]" {hero} asked [sadly|with a frown].
"Good things take time," said {Grand}. "Give it water and sun, and be patient."

Every day, {hero} watered the seed. [Day after day|For many days], {he} waited.
? Some days {he} [sang to it|talked to it|told it stories]. "Please grow," {he} [said|whispered].
Then one morning, {he} saw a [tiny|little] green [sprout|leaf] poking out of the dirt!
"It is growing!" {hero} [shouted|cried]. {He} {joy}.

The plant grew [taller and taller|bigger and bigger]. At last, it turned into {plant_end}.
? {Hero} [showed it to|ran to get] {his} {grand}. "[You were right!|Look!|We did it!]" {he} said.
[{Hero} learned that|That day, {hero} learned that|{Hero} learned an important lesson:|And so {hero} learned that] [good things take time|being patient is worth it|with care and time, little things grow big].

== snow ==
One [winter|cold] morning, {hero} woke up and looked out the window. Everything was white!
  When {hero} woke up one [winter|cold] morning, the whole world was covered in snow.
"Snow!" {hero} [shouted|cried]. {He} put on {his} [warm coat|boots|hat and mittens] and {went} outside.
  {He} could not wait. {He} put on {his} coat, {his} boots and {his} mittens and {went} outside.
? The snow was [soft|cold|deep] and [sparkly|crunchy|fluffy] under {his} feet.

Soon {meet} came outside too. "Let's build a snowman!" said {friend}.
  Then {meet} came by. "Do you want to build a snowman with me?" asked {hero}.
They rolled a big ball of snow for the body, then a smaller one, then a little one for the head.
  They rolled and rolled the snow until they had three round balls: a big one, a middle one and a small one.
But the head was [too heavy|very heavy]. {Hero} could not lift it by {self}.
"I will help you," said {friend}. Together they lifted the head and put it on top.
  "Let's do it together," said {friend}. They lifted it up, one, two, three, and it was on!

They gave the snowman two black stones for eyes and a carrot for a nose.
  {Hero} found two stones for eyes and a carrot for a nose. {Friend} gave the snowman {fhis} [old hat|red scarf].
"He needs a name," said {friend}. "Let's call him [Mr. Frosty|Snowball|Mr. Carrot|Chilly]."
? Then they made snow angels and [threw snowballs|drank hot cocoa|laughed until their cheeks were red].

The next day, the sun came out, and the snowman began to melt. {Hero} felt a little sad.
  A few days later, the snowman was [gone|just a little pile of snow and a carrot]. {Hero} felt sad.
"Don't be sad," said {his} {parent}. "[The snow will come back next winter.|You will always remember the fun you had.]"
[{Hero} learned that|That day, {hero} learned that] [fun with friends is the best fun|every season has its own joys|good times are worth remembering].

== lostway ==
One day, {hero} went to {place} with {his} {parent}.
{He} saw a [pretty butterfly|shiny stone|little rabbit] and [followed it|ran after it] without looking back.
When {he} looked up, {his} {parent} was gone. Everything looked [strange|different|big and new].
"{Parent}? Where are you?" {hero} called. But no one answered.
  {Hero} was lost! {His} heart beat fast.

{Hero} wanted to cry. Then {he} remembered what {his} {parent} always said: "If you ever get lost, stay where you are and ask for help."
{He} [sat down on a rock|stood very still|took a deep breath] and [waited|looked around].
? {He} [sang a little song|counted to one hundred|hugged {his} knees] to feel brave.

Soon, {meet} came by. "Are you lost?" asked {friend}.
"Yes," said {hero}. "I can't find my {parent}."
  {Hero} nodded. "I lost my {parent}," {he} said in a small voice.
"Don't worry," said {friend}. "We can call out together. Two voices are louder than one."
  "I will stay with you," said {friend}. "Let's call for your {parent} together."

"{Parent}! {Parent}!" they called [as loud as they could|again and again].
[Before long|Soon], {hero} heard a voice. "{Hero}! {Hero}!" It was {his} {parent}!
{Hero} ran into {his} {parent}'s arms. [{Parent} hugged {him} tight.|They hugged for a long time.]
"Thank you for helping {him}," {Parent} said to {friend}.
"I was so scared," said {hero}. "But I did what you told me."
[{Hero} learned that|That day, {hero} learned that] [it is important to stay close|when you are lost, you should stay still and ask for help].

== chores ==
One Saturday, {hero}'s {parent} had to {chore}. It was a big job.
  {Hero}'s {parent} was very busy. {Phe} needed to {chore}.
"{Hero}, can you help me?" asked {Parent}.
"But I want to play!" said {hero}. {He} [stomped {his} feet|made a grumpy face|sighed a big sigh].

{Parent} smiled. "If we work together, we will finish fast. Then we can play together."
  "I have an idea," said {Parent}. "Let's make it a game."
{chore_do}
? {Hero} [giggled|laughed out loud]. This was more fun than {he} had thought!

Soon the work was done. {Parent} [gave {hero} a big hug.|said, "Thank you, my little helper."]
  In no time at all, they were finished. "We did it!" said {hero}.
Then, just like {phe} promised, they [played a game|went to {place}|read a book together].
[{Hero} learned that|That day, {hero} learned that] [helping out can be fun|many hands make light work|working together makes a job go fast].

== wish ==
One [evening|morning|day] {at_place}, {hero} saw a tiny light [near|behind] a flower. It was a little fairy with [sparkly|shiny|silver] wings!
"Hello, {hero}," said the fairy. "You have been kind to the animals, so I will give you one wish."
  "I have been watching you," said the fairy. "You have a kind heart. You may make one wish."
{Hero}'s eyes grew big. [{He} thought and thought.|{He} had so many ideas!]

{He} thought about wishing for [a mountain of candy|a hundred toys|a big castle|wings to fly].
But then {he} thought of {his} friend {friend}, who {need}.
"I wish for {friend} to be happy again," said {hero}.
  {Hero} took a deep breath. "My wish is for {friend}," {he} said. "Please make {fhim} happy."

The fairy smiled. "That is the kindest wish of all." [With a wave of her wand|With a twinkle and a flash], she was gone.
{wish_end}
{Friend} [ran to {hero}|came to see {hero}] and said, "[Something wonderful happened!|You will never guess what happened!]"
{Hero} just smiled. [{He} kept the secret in {his} heart.|{He} felt happier than if {he} had wished for a hundred toys.]
[{Hero} learned that|That day, {hero} learned that] [making others happy is the best wish|kindness is a kind of magic].

== bedtime ==
It was time for bed, but {hero} was not sleepy [at all|one bit].
{He} [tossed and turned|counted the spots on the ceiling|got up for a glass of water|peeked out the window].
"I can't sleep," {hero} [said|called]. {His} {parent} came in and sat on the bed.

"Shall I tell you a story?" asked {Parent}. {Hero} nodded.
{Parent} told a story about [a brave little boat on a big sea|a sleepy bear who could not find his bed|a star who wanted to visit the moon|a kind dragon who lived on a hill].
? [{Phe} made funny voices for all the animals.|{Hero} giggled at the funny parts.]

Then they [looked at the stars|said good night to the moon|listened to the rain on the roof] together.
{Hero}'s eyes grew heavy. {He} [yawned a big yawn|snuggled into {his} blanket].
"Good night, {Parent}," {he} whispered. "Good night, {hero}," said {Parent}. "[Sweet dreams.|I love you.]"
Soon {hero} was fast asleep, dreaming of [stars and moons|the story|flying over the hills].
"""
