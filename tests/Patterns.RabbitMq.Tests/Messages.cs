using Patterns.Messaging;

namespace Patterns.RabbitMq.Tests;

[MessageName("tests.order-placed")]
public sealed record OrderPlaced(string OrderId, decimal Amount);

[MessageName("tests.work-item")]
public sealed record WorkItem(int Number);

[MessageName("tests.get-quote")]
public sealed record GetQuote(string Symbol);

[MessageName("tests.quote")]
public sealed record Quote(string Symbol, decimal Price);
