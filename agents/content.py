"""Example workers for the content-creation workflow: research, writing, grammar, fact and
SEO checks, and the final edit. Deterministic stand-ins for the seed material's agents."""

from __future__ import annotations

from typing import Any

from agents.failures import action_data
from agents.worker import ActionRefused, Handler, Result
from choreo.envelope import Event


def _text(data: dict[str, Any]) -> str:
    article = data.get("text") or data.get("content") or {}
    return str(article.get("text", "")) if isinstance(article, dict) else str(article)


async def research_topic(action: Event) -> list[Result]:
    topic = str(action_data(action).get("topic") or "")
    if not topic:
        raise ActionRefused("no topic to research")
    slug = topic.lower().replace(" ", "-")
    sources = [f"https://example.org/{slug}/{n}" for n in (1, 2, 3)]
    facts = [f"{topic} fact {n}" for n in (1, 2, 3)]
    return [Result("research_completed", {"topic": topic, "sources": sources, "facts": facts})]


async def write_article(action: Event) -> list[Result]:
    data = action_data(action)
    research = data.get("research") or {}
    topic = research.get("topic", "untitled")
    style = data.get("style") or "plain"
    length = int(data.get("length") or 300)
    body = " ".join(f"{fact}." for fact in research.get("facts", []))
    text = f"{topic} ({style}). {body}"
    return [Result("article_written", {"title": topic.title(), "text": text, "style": style,
                                       "target_words": length,
                                       "words": len(text.split())})]


async def check_grammar(action: Event) -> list[Result]:
    text = _text(action_data(action))
    issues = text.count("  ") + text.count(" ,")
    return [Result("grammar_checked", {"issues": issues, "score": max(0, 100 - 5 * issues)})]


async def verify_facts(action: Event) -> list[Result]:
    data = action_data(action)
    sources = data.get("sources") or []
    claims = _text(data).count(" fact ")
    return [Result("facts_verified", {"claims": claims, "verified": claims,
                                      "sources_used": len(sources)})]


async def optimize_seo(action: Event) -> list[Result]:
    data = action_data(action)
    text = _text(data).lower()
    keywords = [str(k) for k in data.get("keywords") or []]
    found = [k for k in keywords if k.lower() in text]
    score = round(100 * len(found) / len(keywords)) if keywords else 0
    return [Result("seo_optimized", {"keywords_found": found, "score": score})]


async def final_edit(action: Event) -> list[Result]:
    data = action_data(action)
    content = data.get("content") or {}
    grammar = data.get("grammar_report") or {}
    facts = data.get("fact_report") or {}
    seo = data.get("seo_report") or {}
    ready = grammar.get("score", 0) >= 80 and facts.get("claims") == facts.get("verified")
    return [Result("content_finalized", {"title": content.get("title"),
                                         "text": content.get("text"),
                                         "grammar_score": grammar.get("score"),
                                         "facts_verified": facts.get("verified"),
                                         "seo_score": seo.get("score"), "ready": ready})]


HANDLERS: dict[str, dict[str, Handler]] = {
    "research": {"research_topic": research_topic},
    "writing": {"write_article": write_article},
    "grammar_checking": {"check_grammar": check_grammar},
    "fact_checking": {"verify_facts": verify_facts},
    "seo_optimization": {"optimize_seo": optimize_seo},
    "editing": {"final_edit": final_edit},
}
