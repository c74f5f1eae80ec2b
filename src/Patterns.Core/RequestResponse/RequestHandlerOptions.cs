using Patterns.Resilience;

namespace Patterns.RequestResponse;

/// <summary>Options of one request handler: its resilience pipeline. No retries by default, since requests need not be idempotent.</summary>
public sealed class RequestHandlerOptions : HandlerResilienceOptions
{
}
