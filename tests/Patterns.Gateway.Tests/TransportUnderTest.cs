using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Patterns.RabbitMq;

namespace Patterns.Gateway.Tests;

/// <summary>The transport a messaging test runs on: the in-memory one, or RabbitMQ at PATTERNS_RABBITMQ (skipped without it).</summary>
public static class TransportUnderTest
{
    public const string Memory = "memory";
    public const string Rabbit = "rabbitmq";

    public static TheoryData<string> All => new(Memory, Rabbit);

    public static void Use(WebApplicationBuilder builder, string transport, string test)
    {
        if (transport == Memory)
        {
            builder.AddPatterns(p => p.UseInMemory());
            return;
        }

        var uri = Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ");
        if (string.IsNullOrEmpty(uri))
        {
            Assert.Skip("PATTERNS_RABBITMQ is not set: the RabbitMQ case needs a broker (amqp://guest:guest@127.0.0.1:5672/).");
        }

        builder.AddPatterns(p => p.UseRabbitMq(o =>
        {
            o.Uri = new Uri(uri);
            o.NamePrefix = $"gw.{test}.{Guid.NewGuid():N}."[..(test.Length + 12)];
            o.Durable = false;
            o.NetworkRecoveryInterval = TimeSpan.FromMilliseconds(500);
        }));
    }
}
