namespace Patterns.Gateway.Tests;

public sealed record GetQuote(string Symbol);

public sealed record Quote(string Symbol, decimal Price);

public sealed record Unhandled(string Text);

public sealed record OrderPlaced(string OrderId, int Lines);

public sealed record Ping(string Text);
