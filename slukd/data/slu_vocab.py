"""Templates and slot vocabularies of the built-in SLU corpus (the project's own sentences, SLURP's labels).

Every SLURP intent has templates; ``{type}`` marks a slot filled from :data:`SLOT_VALUES` (a type used twice in one
template gets two different values). The first :data:`DEMO_TEMPLATES` templates of an intent are its short "core"
ones, each with the intent's own cue words (no two intents share a core template's fixed words), used by the
``demo`` tier; the ``full`` tier uses all templates, the longer slot lists and polite openings/closings.
Values are lowercase words that espeak-ng reads as written (numbers spelled out).
"""

from __future__ import annotations

DEMO_TEMPLATES = 2
DEMO_VALUES = 4  # values per slot type in the demo tier (the first ones of each list)

TEMPLATES: dict[str, list[str]] = {
    # alarm
    "alarm_set": ["set an alarm for {time}", "wake me up at {time}", "alarm at {time} {date}", "set an alarm {date}"],
    "alarm_query": ["which alarms are set", "list my alarms for {date}", "what alarms do i have"],
    "alarm_remove": ["cancel my alarm", "delete the alarm for {time}", "remove the {date} alarm"],
    # audio
    "audio_volume_up": ["turn the volume up", "make it louder", "volume up by {change_amount}"],
    "audio_volume_down": ["turn the volume down", "make it quieter", "volume down by {change_amount}"],
    "audio_volume_mute": ["mute the speaker", "silence please", "be quiet for {time}"],
    "audio_volume_other": ["set the volume to {change_amount}", "change the speaker volume", "volume level normal"],
    # calendar
    "calendar_set": [
        "add a meeting with {person} {date}",
        "schedule {event_name} at {time}",
        "book {event_name} with {person} on {date}",
        "put {event_name} in my calendar",
    ],
    "calendar_query": ["what is on my calendar {date}", "show my schedule for {date}", "when is my {event_name}"],
    "calendar_remove": ["cancel the meeting with {person}", "clear my calendar {date}", "delete {event_name}"],
    # cooking
    "cooking_recipe": ["how do i cook {food_type}", "give me a recipe for {food_type}", "recipe with {ingredient}"],
    "cooking_query": ["is the oven hot", "how long to boil {food_type}", "what can i bake"],
    # datetime
    "datetime_query": ["what time is it in {place_name}", "tell me the date {date}", "what day is {date}"],
    "datetime_convert": ["convert {time} to {time_zone}", "what is {time} in {time_zone}", "change the time zone"],
    # email
    "email_sendemail": [
        "send an email to {person}",
        "write a mail to {person} about {event_name}",
        "email {person} {date}",
    ],
    "email_query": ["check my inbox", "any new emails from {person}", "read my unread mail"],
    "email_querycontact": ["what is the phone number of {person}", "find the contact details of {person}"],
    "email_addcontact": ["save {email_address} as a new contact", "add {person} to my contacts"],
    # general
    "general_quirky": ["do you dream", "are you a robot", "what is the meaning of life"],
    "general_joke": ["tell me a joke", "say something funny", "tell me a {joke_type} joke"],
    "general_greet": ["hello there", "good morning assistant", "hi how are you"],
    # iot
    "iot_cleaning": ["start the vacuum cleaner", "clean the {house_place}", "run the robot vacuum"],
    "iot_coffee": ["make me a {coffee_type}", "start the coffee machine", "brew some coffee"],
    "iot_hue_lightchange": ["change the lights to {color_type}", "make the lamp {color_type}"],
    "iot_hue_lightdim": ["dim the lights", "lights lower in the {house_place}", "darker lights please"],
    "iot_hue_lightoff": ["switch the lights off", "lights off in the {house_place}", "turn off the lamp"],
    "iot_hue_lighton": ["switch the lights on", "lights on in the {house_place}", "turn on the lamp"],
    "iot_hue_lightup": ["brighten the lights", "lights brighter in the {house_place}", "increase the brightness"],
    "iot_wemo_off": ["turn off the {device_type} plug", "socket off", "power down the smart plug"],
    "iot_wemo_on": ["turn on the {device_type} plug", "socket on", "power up the smart plug"],
    # lists
    "lists_createoradd": ["add {food_type} to my {list_name} list", "create a {list_name} list", "new list"],
    "lists_query": ["what is on my {list_name} list", "read my lists", "show the {list_name} list"],
    "lists_remove": ["remove {food_type} from my {list_name} list", "delete the {list_name} list"],
    # music
    "music_likeness": ["i love {artist_name}", "i like this song", "my favourite band is {artist_name}"],
    "music_dislikeness": ["i hate this track", "i do not like {artist_name}", "never play this again"],
    "music_query": ["what song is this", "who sings this", "which album is playing"],
    "music_settings": ["turn shuffle {player_setting}", "repeat this song", "set shuffle mode"],
    # news
    "news_query": ["what is the news", "latest headlines about {news_topic}", "read the {news_topic} news"],
    # play
    "play_music": ["play some {music_genre}", "play songs by {artist_name}", "put on {artist_name}"],
    "play_radio": ["play {radio_name} radio", "tune the radio to {radio_name}", "start the radio"],
    "play_podcasts": ["play the {podcast_name} podcast", "next podcast episode", "resume my podcast"],
    "play_audiobook": ["read the audiobook {audiobook_name}", "continue my audiobook", "resume the audio book"],
    "play_game": ["let us play {game_name}", "start a game of {game_name}", "open a game"],
    # qa
    "qa_factoid": [
        "how tall is {place_name} tower",
        "who is the president of {place_name}",
        "facts about {place_name}",
    ],
    "qa_definition": ["define {definition_word}", "what does {definition_word} mean", "meaning of {definition_word}"],
    "qa_maths": ["what is {number} plus {number}", "calculate {number} times {number}", "square root of {number}"],
    "qa_currency": [
        "exchange rate of {currency_name}",
        "how many {currency_name} for one {currency_name}",
        "convert {currency_name} to {currency_name}",
    ],
    "qa_stock": ["stock price of {business_name}", "how are {business_name} shares", "check the stock market"],
    # recommendation
    "recommendation_events": ["any events near me {date}", "what is happening in town {date}", "suggest an event"],
    "recommendation_locations": ["recommend a good {business_type}", "best {business_type} nearby"],
    "recommendation_movies": ["suggest a {movie_type} movie", "recommend a film", "which movie should i watch"],
    # social
    "social_post": ["post on facebook {social_text}", "tweet that {social_text}", "complain to {business_name}"],
    "social_query": ["any updates from {person} on facebook", "check my social feed", "what are my friends doing"],
    # takeaway
    "takeaway_order": ["order a {food_type} takeaway", "i want {food_type} delivered", "order food for {time}"],
    "takeaway_query": ["where is my delivery", "is my takeaway on the way", "does {business_name} deliver"],
    # transport
    "transport_query": ["when is the next {transport_type}", "how do i get to {place_name}", "train times please"],
    "transport_taxi": ["book a taxi to {place_name}", "call me a cab", "get an uber at {time}"],
    "transport_ticket": ["buy a {transport_type} ticket to {place_name}", "book a ticket for {date}"],
    "transport_traffic": ["how is the traffic", "any traffic jams on the way to {place_name}", "road conditions"],
    # weather
    "weather_query": ["what is the weather {date}", "will it rain in {place_name}", "is it {weather_descriptor} today"],
}

#: placeholder -> SLURP entity type (placeholders not listed here are their own type; ``None`` = plain words).
PLACEHOLDER_TYPES: dict[str, str | None] = {"number": None, "social_text": None}

SLOT_VALUES: dict[str, list[str]] = {
    "time": ["seven am", "noon", "six pm", "nine thirty", "ten am", "midnight", "five fifteen", "eight pm"],
    "date": ["today", "tomorrow", "on monday", "on friday", "this weekend", "next week", "on sunday", "tonight"],
    "change_amount": ["ten percent", "twenty percent", "half", "a bit", "two steps", "fifty percent"],
    "person": ["john", "mary", "alex", "sarah", "peter", "emma", "david", "lucy"],
    "event_name": ["lunch", "the dentist", "yoga class", "the team meeting", "dinner", "the interview"],
    "food_type": ["pasta", "pizza", "rice", "soup", "curry", "pancakes", "noodles", "salad"],
    "ingredient": ["chicken", "eggs", "tomatoes", "cheese", "potatoes", "mushrooms"],
    "place_name": ["london", "paris", "tokyo", "boston", "berlin", "madrid", "sydney", "chicago"],
    "time_zone": ["eastern time", "pacific time", "london time", "tokyo time", "central time", "greenwich time"],
    "email_address": [
        "john at mail dot com",
        "mary at work dot org",
        "alex at home dot net",
        "sarah at mail dot com",
        "peter at office dot com",
        "emma at school dot edu",
    ],
    "joke_type": ["funny", "short", "silly", "dad", "science", "knock knock"],
    "house_place": ["kitchen", "bedroom", "living room", "bathroom", "hallway", "office"],
    "coffee_type": ["latte", "espresso", "cappuccino", "black coffee", "flat white", "mocha"],
    "color_type": ["red", "blue", "green", "yellow", "purple", "orange"],
    "device_type": ["kettle", "heater", "fan", "television", "toaster", "lamp"],
    "list_name": ["shopping", "grocery", "todo", "packing", "work", "party"],
    "artist_name": ["adele", "coldplay", "madonna", "the beatles", "queen", "shakira", "elvis", "abba"],
    "player_setting": ["on", "off", "back on", "off again", "on now", "off now"],
    "news_topic": ["sports", "politics", "science", "business", "technology", "health"],
    "music_genre": ["jazz", "rock", "classical music", "pop", "blues", "country music"],
    "radio_name": ["capital", "heart", "jazz fm", "classic fm", "kiss", "magic"],
    "podcast_name": ["daily science", "history hour", "tech talk", "comedy club", "true crime", "money matters"],
    "audiobook_name": ["harry potter", "the hobbit", "dracula", "little women", "moby dick", "emma"],
    "game_name": ["chess", "trivia", "hangman", "twenty questions", "sudoku", "tic tac toe"],
    "definition_word": ["gravity", "democracy", "photosynthesis", "algorithm", "metaphor", "inflation"],
    "number": ["two", "three", "five", "seven", "nine", "twelve", "twenty", "forty"],
    "currency_name": ["dollars", "euros", "pounds", "yen", "rupees", "pesos"],
    "business_name": ["apple", "google", "amazon", "tesla", "nike", "starbucks"],
    "business_type": ["restaurant", "cafe", "bar", "bakery", "gym", "cinema"],
    "movie_type": ["comedy", "horror", "action", "romantic", "science fiction", "animated"],
    "social_text": [
        "i love this weather",
        "the train is late",
        "happy birthday",
        "great concert tonight",
        "good morning everyone",
        "the food was amazing",
    ],
    "transport_type": ["train", "bus", "tram", "ferry", "subway", "coach"],
    "weather_descriptor": ["sunny", "cold", "windy", "hot", "rainy", "cloudy"],
}

#: polite openings / closings of the full tier (never part of a slot)
OPENINGS: list[str] = ["", "please", "hey", "okay", "could you", "can you", "i want you to", "olly"]
CLOSINGS: list[str] = ["", "please", "now", "thanks", "right now", "for me"]
